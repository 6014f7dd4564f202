// The GGUF weight blocks (ggml's block_q4_1 / block_q8_0, kernels/cpu/quant_blocks.h) dequantized in
// registers on the device.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cpu/quant_blocks.h"

namespace kvshrink::kernels::cuda {

constexpr int kQuantBlock = 32;  // elements per Q4_1 / Q8_0 block

using cpu::BlockQ4_1;  // the GGUF layouts, declared once for both backends
using cpu::BlockQ8_0;

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
