#include "kernels/cpu/kivi_group.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/dequantize.h"

namespace kvshrink::kernels::cpu {
namespace {

// Byte offsets of one group's six arrays (kivi_group.h).
struct KiviLayout {
  int64_t key_scales, key_zeros, key_codes, value_scales, value_zeros, value_codes, total;
};

int64_t code_bytes(int64_t codes, int bits) {
  return (codes * bits + 7) / 8;
}

KiviLayout kivi_layout(int64_t d, int64_t group, int bits) {
  const int64_t halves = 2 * d;  // d f16 for keys; G tokens x d/G groups = d f16 for values
  KiviLayout l{};
  l.key_scales = 0;
  l.key_zeros = l.key_scales + halves;
  l.key_codes = l.key_zeros + halves;
  l.value_scales = l.key_codes + code_bytes(d * group, bits);
  l.value_zeros = l.value_scales + halves;
  l.value_codes = l.value_zeros + halves;
  l.total = l.value_codes + code_bytes(group * d, bits);
  return l;
}

void store_half(std::byte* halves, int64_t index, float x) {
  const uint16_t h = fp32_to_fp16(x);
  std::memcpy(halves + 2 * index, &h, sizeof h);
}

float load_half(const std::byte* halves, int64_t index) {
  uint16_t h;
  std::memcpy(&h, halves + 2 * index, sizeof h);
  return fp16_to_fp32(h);
}

void store_code(std::byte* codes, int64_t index, int bits, unsigned code) {
  const int64_t bit = index * bits;
  const unsigned shift = static_cast<unsigned>(bit % 8), mask = (1u << bits) - 1u;
  auto& byte = codes[bit / 8];
  byte = (byte & std::byte(~(mask << shift))) | std::byte((code & mask) << shift);
}

unsigned load_code(const std::byte* codes, int64_t index, int bits) {
  const int64_t bit = index * bits;
  return (std::to_integer<unsigned>(codes[bit / 8]) >> (bit % 8)) & ((1u << bits) - 1u);
}

// One run of n elements x[0], x[stride], ...: its scale and zero into the f16 arrays at `slot`,
// its codes into `codes` from code index `first`.
void quantize_run(const float* x, int64_t n, int64_t stride, int bits, std::byte* scales, std::byte* zeros,
                  int64_t slot, std::byte* codes, int64_t first) {
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const auto top = static_cast<float>((1 << bits) - 1);
  store_half(scales, slot, (hi - lo) / top);
  store_half(zeros, slot, lo);
  const float scale = load_half(scales, slot), zero = load_half(zeros, slot);
  for (int64_t i = 0; i < n; ++i) {
    const float q = scale > 0.0f ? (x[i * stride] - zero) / scale : 0.0f;
    const float code = q > 0.0f ? std::min(std::round(q), top) : 0.0f;  // NaN -> 0
    store_code(codes, first + i, bits, static_cast<unsigned>(code));
  }
}

// The inverse of quantize_run for its first n elements: out[0], out[stride], ...
void dequantize_run(const std::byte* scales, const std::byte* zeros, int64_t slot, const std::byte* codes,
                    int64_t first, int64_t n, int bits, float* out, int64_t stride) {
  const float scale = load_half(scales, slot), zero = load_half(zeros, slot);
  for (int64_t i = 0; i < n; ++i)
    out[i * stride] = zero + static_cast<float>(load_code(codes, first + i, bits)) * scale;
}

}  // namespace

void check_kivi_format(int64_t head_dim, int64_t group, int bits) {
  if (bits != 8 && bits != 4 && bits != 2)
    throw std::invalid_argument("kivi: bits must be 8, 4 or 2, not " + std::to_string(bits));
  if (head_dim < 1)
    throw std::invalid_argument("kivi: head_dim must be >= 1, not " + std::to_string(head_dim));
  if (group < 1) throw std::invalid_argument("kivi: group must be >= 1, not " + std::to_string(group));
  if (head_dim % group != 0)
    throw std::invalid_argument("kivi: group " + std::to_string(group) + " does not divide head_dim " +
                                std::to_string(head_dim));
}

int64_t kivi_group_bytes(int64_t head_dim, int64_t group, int bits) {
  check_kivi_format(head_dim, group, bits);
  return kivi_layout(head_dim, group, bits).total;
}

void quantize_kivi_group(const float* keys, const float* values, int64_t head_dim, int64_t group, int bits,
                         std::byte* out) {
  check_kivi_format(head_dim, group, bits);
  const int64_t d = head_dim, groups = d / group;
  const KiviLayout l = kivi_layout(d, group, bits);
  for (int64_t c = 0; c < d; ++c)  // keys: channel c over the G tokens
    quantize_run(keys + c, group, d, bits, out + l.key_scales, out + l.key_zeros, c, out + l.key_codes,
                 c * group);
  for (int64_t t = 0; t < group; ++t)  // values: token t, channel group g
    for (int64_t g = 0; g < groups; ++g)
      quantize_run(values + t * d + g * group, group, 1, bits, out + l.value_scales, out + l.value_zeros,
                   t * groups + g, out + l.value_codes, t * d + g * group);
}

void dequantize_kivi_group(const std::byte* group_data, int64_t head_dim, int64_t group, int bits,
                           int64_t count, float* keys, float* values) {
  check_kivi_format(head_dim, group, bits);
  if (count < 0 || count > group)
    throw std::invalid_argument("kivi: count " + std::to_string(count) + " is not in [0, group " +
                                std::to_string(group) + "]");
  const int64_t d = head_dim, groups = d / group;
  const KiviLayout l = kivi_layout(d, group, bits);
  const std::byte* in = group_data;
  for (int64_t c = 0; c < d; ++c)
    dequantize_run(in + l.key_scales, in + l.key_zeros, c, in + l.key_codes, c * group, count, bits, keys + c,
                   d);
  for (int64_t t = 0; t < count; ++t)
    for (int64_t g = 0; g < groups; ++g)
      dequantize_run(in + l.value_scales, in + l.value_zeros, t * groups + g, in + l.value_codes,
                     t * d + g * group, group, bits, values + t * d + g * group, 1);
}

}  // namespace kvshrink::kernels::cpu
