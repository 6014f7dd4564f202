#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quant_blocks.h"

namespace kvshrink::kernels::cpu {
namespace {

int64_t block_count(int64_t n, int block_elements, const char* function) {
  if (n < 0 || n % block_elements != 0) {
    throw std::invalid_argument(std::string(function) + ": " + std::to_string(n) +
                                " elements is not a multiple of " + std::to_string(block_elements));
  }
  return n / block_elements;
}

}  // namespace

void quantize_row_q4_0(const float* x, void* dst, int64_t n) {
  const int64_t n_blocks = block_count(n, kQK4_0, "quantize_row_q4_0");
  auto* blocks = static_cast<BlockQ4_0*>(dst);
  for (int64_t b = 0; b < n_blocks; ++b, x += kQK4_0) {
    float max_abs = 0.0f;
    float max = 0.0f;  // the element of largest magnitude, with its sign
    for (int j = 0; j < kQK4_0; ++j) {
      if (std::fabs(x[j]) > max_abs) {
        max_abs = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const int low = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * inverse_d + 8.5f)));
      const int high =
          std::min(15, static_cast<int>(static_cast<int8_t>(x[j + kQK4_0 / 2] * inverse_d + 8.5f)));
      blocks[b].qs[j] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

void quantize_row_q4_1(const float* x, void* dst, int64_t n) {
  const int64_t n_blocks = block_count(n, kQK4_1, "quantize_row_q4_1");
  auto* blocks = static_cast<BlockQ4_1*>(dst);
  for (int64_t b = 0; b < n_blocks; ++b, x += kQK4_1) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < kQK4_1; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = fp32_to_fp16(d);
    blocks[b].m = fp32_to_fp16(min);
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      const int low = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * inverse_d + 0.5f)));
      const int high =
          std::min(15, static_cast<int>(static_cast<int8_t>((x[j + kQK4_1 / 2] - min) * inverse_d + 0.5f)));
      blocks[b].qs[j] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

void quantize_row_q8_0(const float* x, void* dst, int64_t n) {
  const int64_t n_blocks = block_count(n, kQK8_0, "quantize_row_q8_0");
  auto* blocks = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n_blocks; ++b, x += kQK8_0) {
    float max_abs = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) max_abs = std::max(max_abs, std::fabs(x[j]));
    const float d = max_abs / 127.0f;
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j) blocks[b].qs[j] = static_cast<int8_t>(std::round(x[j] * inverse_d));
  }
}

}  // namespace kvshrink::kernels::cpu
