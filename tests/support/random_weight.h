// A reproducible random weight matrix in a GGUF packing: rows x cols normal values
// (random_values.h), each row quantized as the GGUF writer would (F32 kept, F16 rounded to nearest
// even, Q4_0 / Q4_1 / Q8_0 by kernels/cpu/quantize.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"
#include "kernels/weight.h"
#include "support/random_values.h"

namespace kvshrink::testing {

inline kernels::Weight random_weight(kernels::TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  using kernels::TensorType;
  auto values = normal_values(static_cast<size_t>(rows * cols), seed);
  if (type == TensorType::F32) return kernels::Weight::from_f32(rows, cols, std::move(values));
  const int64_t row_bytes = kernels::packed_row_bytes(type, cols);
  std::vector<std::byte> packed(static_cast<size_t>(rows * row_bytes));
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
      default:
        throw std::invalid_argument("random_weight: no quantizer for this type");
    }
  }
  return kernels::Weight::from_packed(type, rows, cols, std::move(packed));
}

}  // namespace kvshrink::testing
