// Element-wise math over float arrays, written as plain loops that GCC vectorises (-O3 -march=native).
#pragma once

#include <bit>
#include <cstdint>

namespace kvshrink::kernels::cpu {

// exp(x) to ~2 ulp for x in [-87, 88]; underflows to 0 below. Cody-Waite range reduction
// x = n*ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r and 2^n by exponent bits.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = __builtin_roundevenf(x * 1.44269504088896341f);
  float r = x - n * 0.693145751953125f;  // ln2 split in two for exactness
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.3888949e-3f;
  p = p * r + 8.3333328e-3f;
  p = p * r + 4.1666667e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(exponent_bits);
}

// x[i] = exp(x[i] - shift); returns the sum of the results.
inline float exp_shifted_sum(float* x, int64_t n, float shift) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    x[i] = fast_exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

inline float max_of(const float* x, int64_t n) {
  float m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace kvshrink::kernels::cpu
