// Element-wise math over float arrays: plain loops that GCC vectorises (-O3 -march=native), and
// AVX-512 intrinsics where it does not (exp_shifted_sum).
#pragma once

#include <cstdint>
#include <initializer_list>

#include "kernels/cpu/simd.h"

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
  return p * __builtin_bit_cast(float, exponent_bits);
}

#if defined(KVSHRINK_SIMD_AVX512)
// fast_exp on 16 lanes, the same operations (so the same bits).
inline __m512 fast_exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.3888949e-3f);
  for (const float c : {8.3333328e-3f, 4.1666667e-2f, 1.6666667e-1f, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  const __m512i exponent_bits =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(exponent_bits));
}
#endif

// x[i] = exp(x[i] - shift); returns the sum of the results. (GCC leaves a plain loop of fast_exp
// scalar in this function's out-of-line copy, hence the intrinsics.)
inline float exp_shifted_sum(float* x, int64_t n, float shift) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(KVSHRINK_SIMD_AVX512)
  __m512 sums = _mm512_setzero_ps();
  const __m512 shift16 = _mm512_set1_ps(shift);
  for (; i < n; i += 16) {
    const __mmask16 lanes = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 e = fast_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, x + i), shift16));
    _mm512_mask_storeu_ps(x + i, lanes, e);
    sums = _mm512_mask_add_ps(sums, lanes, sums, e);
  }
  sum = _mm512_reduce_add_ps(sums);
#endif
  for (; i < n; ++i) {
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
