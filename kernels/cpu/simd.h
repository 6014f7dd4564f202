// One SIMD register of floats for the hand-vectorised kernels (packed_gemv.cpp,
// paged_attention.cpp): Vec holds kLanes floats (AVX-512: 16, AVX2: 8, portable fallback: 1).
// KVSHRINK_SIMD_AVX512 / KVSHRINK_SIMD_AVX2 say which, for kernels with their own intrinsics.
#pragma once

#if defined(__AVX2__) || defined(__AVX512F__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() operands, which -Wuninitialized flags
// wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include <cstdint>

#include "kernels/cpu/dequantize.h"

namespace kvshrink::kernels::cpu {

#if defined(__AVX512F__) && defined(__F16C__)
#define KVSHRINK_SIMD_AVX512 1
using Vec = __m512;
constexpr int kLanes = 16;
inline Vec vzero() {
  return _mm512_setzero_ps();
}
inline Vec vset1(float x) {
  return _mm512_set1_ps(x);
}
inline Vec vload(const float* p) {
  return _mm512_loadu_ps(p);
}
inline Vec vload(const uint16_t* p) {  // kLanes IEEE halves, widened
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline void vstore(float* p, Vec v) {
  _mm512_storeu_ps(p, v);
}
inline Vec vfma(Vec a, Vec b, Vec c) {  // a * b + c, one rounding
  return _mm512_fmadd_ps(a, b, c);
}
inline float vsum(Vec v) {
  return _mm512_reduce_add_ps(v);
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KVSHRINK_SIMD_AVX2 1
using Vec = __m256;
constexpr int kLanes = 8;
inline Vec vzero() {
  return _mm256_setzero_ps();
}
inline Vec vset1(float x) {
  return _mm256_set1_ps(x);
}
inline Vec vload(const float* p) {
  return _mm256_loadu_ps(p);
}
inline Vec vload(const uint16_t* p) {  // kLanes IEEE halves, widened
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline void vstore(float* p, Vec v) {
  _mm256_storeu_ps(p, v);
}
inline Vec vfma(Vec a, Vec b, Vec c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline float vsum(Vec v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)));
}
#else
using Vec = float;
constexpr int kLanes = 1;
inline Vec vzero() {
  return 0.0f;
}
inline Vec vset1(float x) {
  return x;
}
inline Vec vload(const float* p) {
  return *p;
}
inline Vec vload(const uint16_t* p) {
  return fp16_to_fp32(*p);
}
inline void vstore(float* p, Vec v) {
  *p = v;
}
inline Vec vfma(Vec a, Vec b, Vec c) {
  return a * b + c;
}
inline float vsum(Vec v) {
  return v;
}
#endif

}  // namespace kvshrink::kernels::cpu
