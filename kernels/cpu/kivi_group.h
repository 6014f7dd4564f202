// KIVI-style quantized KV (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for
// KV Cache"): a group of G consecutive tokens of one (layer, kv head) held as b-bit codes with f16
// scale and zero point, keys quantized per channel (over the G tokens) and values per token (over
// channel groups of G). b is 8, 4 or 2; G must divide head_dim d. The most recent tokens stay 16-bit
// until a group fills; that bookkeeping is the store's, not this format's.
//
// Quantization of a run of n elements x (n = G): scale = (max - min) / (2^b - 1) and zero = min,
// both rounded to f16; code = clamp(round((x - zero) / scale), 0, 2^b - 1) with the f16-rounded
// scale and zero widened to f32, so dequantization zero + code * scale is what the codes were fitted
// against. When the f16 scale is 0 (max == min) every code is 0 and the run dequantizes to zero.
//
// Layout of one group: kivi_group_bytes(d, G, b) contiguous bytes, no alignment required. f16 is
// IEEE binary16 in host byte order (little-endian on every supported target).
//
//   offset                 bytes             contents
//   0                      2*d               key scales   [d] f16, channel c at index c
//   2*d                    2*d               key zeros    [d] f16
//   4*d                    ceil(d*G*b/8)     key codes    [d channels][G tokens]: code index c*G + t
//                                            (channel-major, one channel's G codes contiguous)
//   K = 4*d + key codes    2*d               value scales [G tokens][d/G channel groups] f16:
//                                            index t*(d/G) + g covers channels [g*G, (g+1)*G)
//   K + 2*d                2*d               value zeros  [G][d/G] f16
//   K + 4*d                ceil(G*d*b/8)     value codes  [G tokens][d channels]: code index t*d + c
//
// Code packing (both code arrays): code i sits in bits [(i*b) % 8, (i*b) % 8 + b) of byte (i*b) / 8
// of its array, so 8/b codes a byte, lowest bits first, and no code straddles two bytes.
// Token positions are not part of a group.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvshrink::kernels::cpu {

// Throws std::invalid_argument, naming the bad value, for bits not in {8, 4, 2}, head_dim < 1,
// group < 1 or group not dividing head_dim.
void check_kivi_format(int64_t head_dim, int64_t group, int bits);

// Bytes one group of `group` tokens holds (K and V codes, scales and zeros). Checks the format.
int64_t kivi_group_bytes(int64_t head_dim, int64_t group, int bits);

// keys, values [group x head_dim] row-major f32 -> out (kivi_group_bytes bytes). Checks the format.
void quantize_kivi_group(const float* keys, const float* values, int64_t head_dim, int64_t group, int bits,
                         std::byte* out);

// The group's first `count` tokens (0 <= count <= group) dequantized into keys, values
// [count x head_dim] row-major f32. Checks the format and count.
void dequantize_kivi_group(const std::byte* group_data, int64_t head_dim, int64_t group, int bits,
                           int64_t count, float* keys, float* values);

}  // namespace kvshrink::kernels::cpu
