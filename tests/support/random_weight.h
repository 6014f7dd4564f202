// A reproducible random weight matrix in a GGUF packing: rows x cols normal values
// (random_values.h), each row quantized as the GGUF writer would (F32 kept, F16 rounded to nearest
// even, BF16 truncated, Q4_0 / Q4_1 / Q8_0 by kernels/cpu/quantize.h). Q4_K and Q6_K have no
// quantizer here: their blocks are random bytes (mt19937(seed)) with random fp16 super-block scales
// in place that keep the weights within about +-4 (layouts: kernels/cpu/quant_blocks.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quantize.h"
#include "kernels/weight.h"
#include "support/random_values.h"

namespace kvshrink::testing {

// Random K-quant blocks filling `bytes` (whole blocks of `type`, Q4_K or Q6_K).
inline void random_k_quant_blocks(kernels::TensorType type, std::byte* bytes, int64_t size,
                                  std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> unit(0.5f, 1.0f);
  for (int64_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(byte(rng));
  const bool q4_k = type == kernels::TensorType::Q4_K;
  const int64_t block_bytes = q4_k ? sizeof(kernels::cpu::BlockQ4_K) : sizeof(kernels::cpu::BlockQ6_K);
  for (std::byte* block = bytes; block < bytes + size; block += block_bytes) {
    // Q4_K: |d sc q| <= d 63 15 and dmin m <= dmin 63; Q6_K: |d scale (q - 32)| <= d 128 32.
    const uint16_t d = kernels::cpu::fp32_to_fp16(unit(rng) * (q4_k ? 4e-3f : 1e-3f));
    std::memcpy(q4_k ? block : block + block_bytes - 2, &d, 2);  // Q6_K: d last
    if (q4_k) {
      const uint16_t dmin = kernels::cpu::fp32_to_fp16(unit(rng) * 4e-3f);
      std::memcpy(block + 2, &dmin, 2);
    }
  }
}

inline kernels::Weight random_weight(kernels::TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  using kernels::TensorType;
  auto values = normal_values(static_cast<size_t>(rows * cols), seed);
  if (type == TensorType::F32) return kernels::Weight::from_f32(rows, cols, std::move(values));
  const int64_t row_bytes = kernels::packed_row_bytes(type, cols);
  std::vector<std::byte> packed(static_cast<size_t>(rows * row_bytes));
  if (type == TensorType::Q4_K || type == TensorType::Q6_K) {
    std::mt19937 rng(seed);
    random_k_quant_blocks(type, packed.data(), static_cast<int64_t>(packed.size()), rng);
    return kernels::Weight::from_packed(type, rows, cols, std::move(packed));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = values.data() + r * cols;
    std::byte* dst = packed.data() + r * row_bytes;
    switch (type) {
      case TensorType::Q4_0:
        kernels::cpu::quantize_row_q4_0(src, dst, cols);
        break;
      case TensorType::Q4_1:
        kernels::cpu::quantize_row_q4_1(src, dst, cols);
        break;
      case TensorType::Q8_0:
        kernels::cpu::quantize_row_q8_0(src, dst, cols);
        break;
      case TensorType::F16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = kernels::cpu::fp32_to_fp16(src[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      case TensorType::BF16:
        for (int64_t c = 0; c < cols; ++c) {
          uint32_t bits;
          std::memcpy(&bits, &src[c], 4);
          const auto b = static_cast<uint16_t>(bits >> 16);
          std::memcpy(dst + 2 * c, &b, 2);
        }
        break;
      default:
        throw std::invalid_argument("random_weight: no quantizer for this type");
    }
  }
  return kernels::Weight::from_packed(type, rows, cols, std::move(packed));
}

}  // namespace kvshrink::testing
