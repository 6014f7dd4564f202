#include "kernels/cpu/q8_activations.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemm_small_threads.h"
#include "kernels/cpu/simd.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvshrink::kernels::cpu {

namespace {

float round_to_fp16(float v) {  // as fp16_to_fp32(fp32_to_fp16(v)): round to nearest even
#if defined(__F16C__)
  return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
#else
  return fp16_to_fp32(fp32_to_fp16(v));
#endif
}

// Block b of x into out (sized by the caller): 16 lanes at a time where AVX-512 is compiled, the
// same values as the loops (fabs, max, x * 127 / amax rounded to nearest even).
void quantize_block(const float* x, size_t b, Q8Activations& out) {
  const float* xb = x + b * kQ8Block;
  int8_t* qb = out.q.data() + b * kQ8Block;
  int32_t sum = 0;
  float d = 0.0f;
#if defined(KVSHRINK_SIMD_AVX512)
  const __m512 low = _mm512_loadu_ps(xb), high = _mm512_loadu_ps(xb + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
  d = amax / 127.0f;
  const __m512 inverse = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512i q_low = _mm512_cvt_roundps_epi32(_mm512_mul_ps(low, inverse), kNearest);
  const __m512i q_high = _mm512_cvt_roundps_epi32(_mm512_mul_ps(high, inverse), kNearest);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(q_low));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtepi32_epi8(q_high));
  sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q_low, q_high));
#else
  float amax = 0.0f;
#pragma omp simd reduction(max : amax)
  for (int j = 0; j < kQ8Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
  d = amax / 127.0f;
  const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < kQ8Block; ++j) {
    const auto q = static_cast<int32_t>(std::nearbyint(xb[j] * inverse));
    qb[j] = static_cast<int8_t>(q);
    sum += q;
  }
#endif
  out.d[b] = round_to_fp16(d);
  out.sum[b] = sum;
  out.s[b] = round_to_fp16(d * static_cast<float>(sum));
}

void quantize_blocks(const float* x, size_t first, size_t end, Q8Activations& out) {
  for (size_t b = first; b < end; ++b) quantize_block(x, b, out);
}

}  // namespace

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
  // many rows (prefill chunks, wide decode steps): tasks of >= 8 rows on the compute threads
  constexpr int64_t kRowsPerTask = 8;
  if (m < 2 * kRowsPerTask) return quantize_blocks(x, 0, blocks, out);
  const int64_t per_task = std::max(kRowsPerTask, (m + 31) / 32);
  const auto row_blocks = static_cast<size_t>(out.blocks());
  run_on_compute_threads((m + per_task - 1) / per_task, [&](int64_t task) {
    const auto first = static_cast<size_t>(task * per_task) * row_blocks;
    quantize_blocks(x, first, std::min(blocks, first + static_cast<size_t>(per_task) * row_blocks), out);
  });
}

void dequantize_activations(const Q8Activations& a, float* x) {
  const auto blocks = static_cast<size_t>(a.m * a.blocks());
  for (size_t b = 0; b < blocks; ++b) {
    for (int j = 0; j < kQ8Block; ++j) x[b * kQ8Block + j] = a.q[b * kQ8Block + j] * a.d[b];
  }
}

}  // namespace kvshrink::kernels::cpu
