// The GGUF weight packings (ggml's blocks, kernels/cpu/quant_blocks.h; F32, F16, BF16 elements)
// dequantized in registers on the device, as kernels/cpu/dequantize.cpp decodes them, and the row
// decoders the packed kernels are templated on.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/tensor_type.h"

namespace kvshrink::kernels::cuda {

constexpr int kQuantBlock = 32;  // elements per Q4_0 / Q4_1 / Q8_0 block and per K-quant sub-block

using cpu::BlockQ4_0;  // the GGUF layouts, declared once for both backends
using cpu::BlockQ4_1;
using cpu::BlockQ4_K;
using cpu::BlockQ6_K;
using cpu::BlockQ8_0;
using cpu::kQK_K;

__device__ inline float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}
__device__ inline float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// w[0..32) = the block's weights: (q - 8) * d (Q4_0), d * q + m (Q4_1), d * q (Q8_0)
__device__ inline void dequantize(const BlockQ4_0& block, float w[kQuantBlock]) {
  const float d = half_bits_to_float(block.d);
  for (int j = 0; j < 16; ++j) {
    w[j] = static_cast<float>((block.qs[j] & 0x0F) - 8) * d;
    w[j + 16] = static_cast<float>((block.qs[j] >> 4) - 8) * d;
  }
}
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

// w[0..32) = sub-block s < 8 of a Q4_K super-block (its elements 32s..32s+31):
// d * sc_s * q - dmin * m_s, q the low (s even) or high (s odd) nibbles of qs[32 (s / 2)..][0..32).
__device__ inline void dequantize(const BlockQ4_K& block, int s, float w[kQuantBlock]) {
  const uint8_t* sc = block.scales;
  const int scale = s < 4 ? sc[s] & 63 : (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
  const int min = s < 4 ? sc[s + 4] & 63 : (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
  const float d = half_bits_to_float(block.d) * static_cast<float>(scale);
  const float m = half_bits_to_float(block.dmin) * static_cast<float>(min);
  const uint8_t* q = block.qs + 32 * (s / 2);
  const int shift = 4 * (s % 2);
  for (int l = 0; l < kQuantBlock; ++l) w[l] = d * static_cast<float>((q[l] >> shift) & 0xF) - m;
}

// w[0..32) = sub-block s < 8 of a Q6_K super-block (elements 32s..32s+31): half h = s / 4, quarter
// k = s % 4 of it; 4 low bits from ql[64h + 32 (k % 2) + l] (nibble k / 2), 2 high bits from
// qh[32h + l] bits 2k..2k+1, scale scales[8h + 2k + l / 16]; d * scale * (q - 32).
__device__ inline void dequantize(const BlockQ6_K& block, int s, float w[kQuantBlock]) {
  const int h = s / 4, k = s % 4;
  const uint8_t* ql = block.ql + 64 * h + 32 * (k % 2);
  const uint8_t* qh = block.qh + 32 * h;
  const int low_shift = 4 * (k / 2), high_shift = 2 * k;
  const float d = half_bits_to_float(block.d);
  for (int l = 0; l < kQuantBlock; ++l) {
    const int q = (((ql[l] >> low_shift) & 0xF) | (((qh[l] >> high_shift) & 3) << 4)) - 32;
    const float scale = d * static_cast<float>(block.scales[8 * h + 2 * k + l / 16]);
    w[l] = scale * static_cast<float>(q);
  }
}

// Row decoders: Decoder::chunk(row, c, w) sets w[0..kChunk) = elements c * kChunk.. of a packed row
// (a row's chunks are cols / kChunk; kChunk = 32 for the blocked packings, 1 for plain elements).
template <class Block>
struct BlockRow {  // Q4_0, Q4_1, Q8_0
  static constexpr int kChunk = kQuantBlock;
  __device__ static void chunk(const void* row, int64_t c, float* w) {
    dequantize(static_cast<const Block*>(row)[c], w);
  }
};
template <class Block>
struct SuperBlockRow {  // Q4_K, Q6_K: chunk c is sub-block c % 8 of super-block c / 8
  static constexpr int kChunk = kQuantBlock;
  __device__ static void chunk(const void* row, int64_t c, float* w) {
    dequantize(static_cast<const Block*>(row)[c / 8], static_cast<int>(c % 8), w);
  }
};
struct F32Row {
  static constexpr int kChunk = 1;
  __device__ static void chunk(const void* row, int64_t c, float* w) {
    w[0] = static_cast<const float*>(row)[c];
  }
};
struct F16Row {
  static constexpr int kChunk = 1;
  __device__ static void chunk(const void* row, int64_t c, float* w) {
    w[0] = half_bits_to_float(static_cast<const uint16_t*>(row)[c]);
  }
};
struct BF16Row {
  static constexpr int kChunk = 1;
  __device__ static void chunk(const void* row, int64_t c, float* w) {
    w[0] = bf16_bits_to_float(static_cast<const uint16_t*>(row)[c]);
  }
};

// A packing's block geometry on the host (as tensor_type_info, for the types above).
struct BlockGeometry {
  int64_t elements;  // per block
  int64_t bytes;     // per block
};
inline BlockGeometry block_geometry(TensorType type) {
  switch (type) {
    case TensorType::F32:
      return {1, 4};
    case TensorType::F16:
    case TensorType::BF16:
      return {1, 2};
    case TensorType::Q4_0:
      return {kQuantBlock, sizeof(BlockQ4_0)};
    case TensorType::Q4_1:
      return {kQuantBlock, sizeof(BlockQ4_1)};
    case TensorType::Q8_0:
      return {kQuantBlock, sizeof(BlockQ8_0)};
    case TensorType::Q4_K:
      return {kQK_K, sizeof(BlockQ4_K)};
    case TensorType::Q6_K:
      return {kQK_K, sizeof(BlockQ6_K)};
  }
  return {0, 0};
}

// f(Decoder{}) with the row decoder of `type` (one of those above; the caller has checked it).
template <class F>
void with_row_decoder(TensorType type, F&& f) {
  switch (type) {
    case TensorType::F32:
      return f(F32Row{});
    case TensorType::F16:
      return f(F16Row{});
    case TensorType::BF16:
      return f(BF16Row{});
    case TensorType::Q4_0:
      return f(BlockRow<BlockQ4_0>{});
    case TensorType::Q4_1:
      return f(BlockRow<BlockQ4_1>{});
    case TensorType::Q8_0:
      return f(BlockRow<BlockQ8_0>{});
    case TensorType::Q4_K:
      return f(SuperBlockRow<BlockQ4_K>{});
    case TensorType::Q6_K:
      return f(SuperBlockRow<BlockQ6_K>{});
  }
}

}  // namespace kvshrink::kernels::cuda
