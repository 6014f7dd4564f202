#include "kernels/cpu/packed_gemv.h"

#include <cstring>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quant_blocks.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define KVSHRINK_GEMV_AVX2 1
#endif

namespace kvshrink::kernels::cpu {
namespace {

#if defined(KVSHRINK_GEMV_AVX2)
float horizontal_sum(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)));
}

// 8 unsigned bytes -> 8 floats
__m256 bytes_to_floats(__m128i bytes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
}

__m256 broadcast_fp16(uint16_t h) {
  return _mm256_set1_ps(_cvtsh_ss(h));
}
#endif

#if defined(KVSHRINK_GEMV_AVX2)
// q_b . x_b for one Q4_1 block, as 8 partial sums (two independent FMA chains).
__m256 q4_1_block_dot(const BlockQ4_1& block, const float* xb) {
  const __m128i low_nibble = _mm_set1_epi8(0x0F);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block.qs));
  const __m128i low = _mm_and_si128(packed, low_nibble);                      // elements 0..15
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibble);  // elements 16..31
  const __m256 first = _mm256_fmadd_ps(bytes_to_floats(_mm_srli_si128(low, 8)), _mm256_loadu_ps(xb + 8),
                                       _mm256_mul_ps(bytes_to_floats(low), _mm256_loadu_ps(xb)));
  const __m256 second = _mm256_fmadd_ps(bytes_to_floats(_mm_srli_si128(high, 8)), _mm256_loadu_ps(xb + 24),
                                        _mm256_mul_ps(bytes_to_floats(high), _mm256_loadu_ps(xb + 16)));
  return _mm256_add_ps(first, second);
}
#endif

// Q4_1 row . x = sum_b d_b * (q_b . x_b) + m_b * sum(x_b); block_sums[b] = sum(x_b) is shared by all rows.
float dot_q4_1(const BlockQ4_1* blocks, const float* x, const float* block_sums, int64_t n_blocks) {
  float min_part = 0.0f;
#if defined(KVSHRINK_GEMV_AVX2)
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // even and odd blocks
  int64_t b = 0;
  for (; b + 1 < n_blocks; b += 2) {
    acc[0] = _mm256_fmadd_ps(broadcast_fp16(blocks[b].d), q4_1_block_dot(blocks[b], x + b * kQK4_1), acc[0]);
    acc[1] = _mm256_fmadd_ps(broadcast_fp16(blocks[b + 1].d),
                             q4_1_block_dot(blocks[b + 1], x + (b + 1) * kQK4_1), acc[1]);
  }
  if (b < n_blocks) {
    acc[0] = _mm256_fmadd_ps(broadcast_fp16(blocks[b].d), q4_1_block_dot(blocks[b], x + b * kQK4_1), acc[0]);
  }
  for (b = 0; b < n_blocks; ++b) min_part += _cvtsh_ss(blocks[b].m) * block_sums[b];
  return horizontal_sum(_mm256_add_ps(acc[0], acc[1])) + min_part;
#else
  float scaled = 0.0f;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ4_1& block = blocks[b];
    const float* xb = x + b * kQK4_1;
    float q_dot_x = 0.0f;
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      q_dot_x +=
          static_cast<float>(block.qs[j] & 0xF) * xb[j] + static_cast<float>(block.qs[j] >> 4) * xb[j + 16];
    }
    scaled += fp16_to_fp32(block.d) * q_dot_x;
    min_part += fp16_to_fp32(block.m) * block_sums[b];
  }
  return scaled + min_part;
#endif
}

// Q8_0 row . x = sum_b d_b * (q_b . x_b).
float dot_q8_0(const BlockQ8_0* blocks, const float* x, int64_t n_blocks) {
#if defined(KVSHRINK_GEMV_AVX2)
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ8_0& block = blocks[b];
    const float* xb = x + b * kQK8_0;
    __m256 q_dot_x = _mm256_setzero_ps();
    for (int part = 0; part < 4; ++part) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block.qs + 8 * part));
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
      q_dot_x = _mm256_fmadd_ps(q, _mm256_loadu_ps(xb + 8 * part), q_dot_x);
    }
    acc = _mm256_fmadd_ps(broadcast_fp16(block.d), q_dot_x, acc);
  }
  return horizontal_sum(acc);
#else
  float sum = 0.0f;
  for (int64_t b = 0; b < n_blocks; ++b) {
    float q_dot_x = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) q_dot_x += static_cast<float>(blocks[b].qs[j]) * x[b * kQK8_0 + j];
    sum += fp16_to_fp32(blocks[b].d) * q_dot_x;
  }
  return sum;
#endif
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

void packed_gemv(const Weight& w, const float* x, float* y, std::vector<float>& row_scratch) {
  const int64_t cols = w.cols();
  switch (w.dtype()) {
    case TensorType::Q4_1: {
      const int64_t n_blocks = cols / kQK4_1;
      std::vector<float> block_sums(static_cast<size_t>(n_blocks));
      for (int64_t b = 0; b < n_blocks; ++b) {
        float sum = 0.0f;
        for (int j = 0; j < kQK4_1; ++j) sum += x[b * kQK4_1 + j];
        block_sums[b] = sum;
      }
      for (int64_t r = 0; r < w.rows(); ++r) {
        y[r] = dot_q4_1(reinterpret_cast<const BlockQ4_1*>(w.row(r)), x, block_sums.data(), n_blocks);
      }
      return;
    }
    case TensorType::Q8_0:
      for (int64_t r = 0; r < w.rows(); ++r) {
        y[r] = dot_q8_0(reinterpret_cast<const BlockQ8_0*>(w.row(r)), x, cols / kQK8_0);
      }
      return;
    default:
      row_scratch.resize(static_cast<size_t>(cols));
      for (int64_t r = 0; r < w.rows(); ++r) {
        dequantize_row(w.dtype(), w.row(r), row_scratch.data(), cols);
        y[r] = dot_f32(row_scratch.data(), x, cols);
      }
  }
}

}  // namespace kvshrink::kernels::cpu
