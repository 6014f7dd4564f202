#include "kernels/cpu/q8_activations.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/dequantize.h"

namespace kvshrink::kernels::cpu {

void quantize_activations(const float* x, int64_t m, int64_t cols, Q8Activations& out) {
  if (cols % kQ8Block != 0) {
    throw std::invalid_argument("quantize_activations: " + std::to_string(cols) +
                                " columns are not whole 32-element blocks");
  }
  out.m = m;
  out.cols = cols;
  const auto blocks = static_cast<size_t>(m * out.blocks());
  out.q.resize(static_cast<size_t>(m * cols));
  out.d.resize(blocks);
  out.s.resize(blocks);
  out.sum.resize(blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kQ8Block;
    int8_t* qb = out.q.data() + b * kQ8Block;
    float amax = 0.0f;
#pragma omp simd reduction(max : amax)
    for (int j = 0; j < kQ8Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < kQ8Block; ++j) {
      const auto q = static_cast<int32_t>(std::nearbyint(xb[j] * inverse));
      qb[j] = static_cast<int8_t>(q);
      sum += q;
    }
    out.d[b] = fp16_to_fp32(fp32_to_fp16(d));
    out.sum[b] = sum;
    out.s[b] = fp16_to_fp32(fp32_to_fp16(d * static_cast<float>(sum)));
  }
}

void dequantize_activations(const Q8Activations& a, float* x) {
  const auto blocks = static_cast<size_t>(a.m * a.blocks());
  for (size_t b = 0; b < blocks; ++b) {
    for (int j = 0; j < kQ8Block; ++j) x[b * kQ8Block + j] = a.q[b * kQ8Block + j] * a.d[b];
  }
}

}  // namespace kvshrink::kernels::cpu
