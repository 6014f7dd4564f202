// The GGUF weight blocks on the device (ggml's block_q4_1 / block_q8_0, laid out as
// kernels/cpu/quant_blocks.h declares them) and their dequantization in registers.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace kvshrink::kernels::cuda {

constexpr int kQuantBlock = 32;  // elements per Q4_1 / Q8_0 block

struct BlockQ4_1 {
  uint16_t d, m;   // fp16 scale and minimum
  uint8_t qs[16];  // low nibbles: elements 0..15; high nibbles: elements 16..31
};
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQuantBlock];
};
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ8_0) == 34, "GGUF block sizes");

__device__ inline float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// w[0..32) = the block's weights: d * q + m (Q4_1), d * q (Q8_0)
__device__ inline void dequantize(const BlockQ4_1& block, float w[kQuantBlock]) {
  const float d = half_bits_to_float(block.d), m = half_bits_to_float(block.m);
  for (int j = 0; j < 16; ++j) {
    w[j] = d * static_cast<float>(block.qs[j] & 0x0F) + m;
    w[j + 16] = d * static_cast<float>(block.qs[j] >> 4) + m;
  }
}
__device__ inline void dequantize(const BlockQ8_0& block, float w[kQuantBlock]) {
  const float d = half_bits_to_float(block.d);
  for (int j = 0; j < kQuantBlock; ++j) w[j] = d * static_cast<float>(block.qs[j]);
}

}  // namespace kvshrink::kernels::cuda
