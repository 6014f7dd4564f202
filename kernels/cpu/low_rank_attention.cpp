// low_rank_head_attention (kernels/cpu/head_attention.h): attention over a head's rank buckets, the
// query projected and the values projected back once per head and step. f16 coefficients are
// widened to f32 once per call.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/head_attention.h"
#include "kernels/cpu/kv_elements.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {
namespace {

// a's buckets with f32 coefficients: f16 buckets widened into s.lr_coefficients, f32 ones as they are.
const LowRankBucket* f32_buckets(const LowRankAttention& a, AttentionScratch& s) {
  int64_t widened = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    if (a.buckets[b].dtype != KvDtype::kF32) widened += 2 * a.buckets[b].n * a.buckets[b].rank;
  }
  s.lr_coefficients.resize(static_cast<size_t>(widened));
  s.lr_buckets.assign(a.buckets, a.buckets + a.n_buckets);
  float* next = s.lr_coefficients.data();
  for (auto& bucket : s.lr_buckets) {
    if (bucket.dtype == KvDtype::kF32) continue;
    const int64_t count = bucket.n * bucket.rank;
    kv_to_f32(bucket.key_coefficients, bucket.dtype, next, count);
    kv_to_f32(bucket.value_coefficients, bucket.dtype, next + count, count);
    bucket.key_coefficients = next;
    bucket.value_coefficients = next + count;
    bucket.dtype = KvDtype::kF32;
    next += 2 * count;
  }
  return s.lr_buckets.data();
}

}  // namespace

void low_rank_head_attention(const LowRankAttention& a, AttentionScratch& s) {
  const LowRankBucket* buckets = f32_buckets(a, s);
  const int64_t d = a.head_dim;
  const int64_t rows = a.m * a.group;  // query heads of all tokens, [token][head]
  int64_t r_max = 0;
  int64_t n = 0;  // tokens of every bucket: columns of the score rows, bucket after bucket
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    r_max = std::max(r_max, buckets[b].rank);
    n += buckets[b].n;
  }
  const auto gemm = [](CBLAS_TRANSPOSE tb, int64_t mm, int64_t nn, int64_t kk, float alpha, const float* x,
                       int64_t ldx, const float* y, int64_t ldy, float beta, float* z, int64_t ldz) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, static_cast<int>(mm), static_cast<int>(nn),
                static_cast<int>(kk), alpha, x, static_cast<int>(ldx), y, static_cast<int>(ldy), beta, z,
                static_cast<int>(ldz));
  };
  s.lr_queries.resize(static_cast<size_t>(rows * d));  // queries, contiguous [rows x d]
  for (int64_t i = 0; i < a.m; ++i)
    std::copy_n(a.q + i * a.q_stride, a.group * d, s.lr_queries.data() + i * a.group * d);
  s.scores.resize(static_cast<size_t>(rows * n));  // [rows x n]
  s.lr_positions.resize(static_cast<size_t>(n));
  s.lr_latent.resize(static_cast<size_t>(rows * r_max));
  if (!a.pre_rope_keys) {
    // q_z [rows x r_max] = Q [rows x d] . U_k[:r_max]^T, once (small: plain loops)
    for (int64_t row = 0; row < rows; ++row) {
      const float* q = s.lr_queries.data() + row * d;
      for (int64_t k = 0; k < r_max; ++k) {
        const float* u = a.key_basis + k * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < d; ++i) dot += q[i] * u[i];
        s.lr_latent[static_cast<size_t>(row * r_max + k)] = dot;
      }
    }
  }
  // Scores: bucket b fills columns [column, column + n_b) of every row.
  int64_t column = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    const auto& bucket = buckets[b];
    const int64_t r = bucket.rank;
    std::copy_n(bucket.positions, bucket.n, s.lr_positions.data() + column);
    if (bucket.n == 0) continue;
    const auto* key_coefficients = static_cast<const float*>(bucket.key_coefficients);
    if (a.pre_rope_keys) {
      // keys [n_b x d] = Z_k [n_b x r] . U_k[:r], rotated to their positions; scores = scale * Q . keys^T
      s.lr_keys.resize(static_cast<size_t>(bucket.n * d));
      gemm(CblasNoTrans, bucket.n, d, r, 1.0f, key_coefficients, r, a.key_basis, d, 0.0f, s.lr_keys.data(),
           d);
      rope(s.lr_keys.data(), bucket.n, 1, d, bucket.positions, a.rope_base);
      gemm(CblasTrans, rows, bucket.n, d, a.scale, s.lr_queries.data(), d, s.lr_keys.data(), d, 0.0f,
           s.scores.data() + column, n);
    } else if (a.m == 1) {  // decode: read each token's coefficients once for the whole group
      for (int64_t t = 0; t < bucket.n; ++t) {
        const float* z = key_coefficients + t * r;
        for (int64_t row = 0; row < rows; ++row) {
          const float* qz = s.lr_latent.data() + row * r_max;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t k = 0; k < r; ++k) dot += qz[k] * z[k];
          s.scores[static_cast<size_t>(row * n + column + t)] = dot * a.scale;
        }
      }
    } else {
      gemm(CblasTrans, rows, bucket.n, r, a.scale, s.lr_latent.data(), r_max, key_coefficients, r, 0.0f,
           s.scores.data() + column, n);
    }
    column += bucket.n;
  }
  // Causal mask + one softmax per row over every bucket (masked entries exactly 0), lse.
  for (int64_t row = 0; row < rows; ++row) {
    float* row_scores = s.scores.data() + row * n;
    const int32_t q_position = a.q_positions[row / a.group];
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      if (s.lr_positions[static_cast<size_t>(t)] > q_position)
        row_scores[t] = -std::numeric_limits<float>::infinity();
      row_max = std::max(row_max, row_scores[t]);
    }
    if (row_max == -std::numeric_limits<float>::infinity()) {
      std::fill_n(row_scores, n, 0.0f);
      a.lse[row] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float sum = exp_shifted_sum(row_scores, n, row_max);  // masked: e^-87 at most, nothing beside >= 1
    const float inv_sum = 1.0f / sum;
    for (int64_t t = 0; t < n; ++t)
      row_scores[t] = s.lr_positions[static_cast<size_t>(t)] > q_position ? 0.0f : row_scores[t] * inv_sum;
    a.lse[row] = row_max + std::log(sum);
  }
  // a_z [rows x r_max] = sum over buckets of P_b [rows x n_b] . Z_v,b [n_b x r_b] (first r_b coordinates)
  std::fill(s.lr_latent.begin(), s.lr_latent.end(), 0.0f);
  column = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    const auto& bucket = buckets[b];
    const int64_t r = bucket.rank;
    if (bucket.n == 0) continue;
    const auto* value_coefficients = static_cast<const float*>(bucket.value_coefficients);
    if (a.m == 1) {
      for (int64_t t = 0; t < bucket.n; ++t) {
        const float* z = value_coefficients + t * r;
        for (int64_t row = 0; row < rows; ++row) {
          const float p = s.scores[static_cast<size_t>(row * n + column + t)];
          float* acc = s.lr_latent.data() + row * r_max;
#pragma omp simd
          for (int64_t k = 0; k < r; ++k) acc[k] += p * z[k];
        }
      }
    } else {
      gemm(CblasNoTrans, rows, r, bucket.n, 1.0f, s.scores.data() + column, n, value_coefficients, r, 1.0f,
           s.lr_latent.data(), r_max);
    }
    column += bucket.n;
  }
  // out [rows x d] = a_z . U_v[:r_max], once (small: plain loops)
  s.lr_out.assign(static_cast<size_t>(rows * d), 0.0f);
  for (int64_t row = 0; row < rows; ++row) {
    float* out = s.lr_out.data() + row * d;
    for (int64_t k = 0; k < r_max; ++k) {
      const float c = s.lr_latent[static_cast<size_t>(row * r_max + k)];
      const float* u = a.value_basis + k * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) out[i] += c * u[i];
    }
  }
  for (int64_t i = 0; i < a.m; ++i)
    std::copy_n(s.lr_out.data() + i * a.group * d, a.group * d, a.out + i * a.out_stride);
}

}  // namespace kvshrink::kernels::cpu
