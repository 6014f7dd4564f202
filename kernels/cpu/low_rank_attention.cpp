// CpuBackend::low_rank_attention (kernels/backend.h): attention over a head's rank buckets, the
// query projected and the values projected back once per head and step.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {

void CpuBackend::low_rank_attention(const LowRankAttention& a) {
  const int64_t d = a.head_dim;
  const int64_t rows = a.m * a.group;  // query heads of all tokens, [token][head]
  int64_t r_max = 0;
  int64_t n = 0;  // tokens of every bucket: columns of the score rows, bucket after bucket
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    r_max = std::max(r_max, a.buckets[b].rank);
    n += a.buckets[b].n;
  }
  const auto gemm = [](CBLAS_TRANSPOSE tb, int64_t mm, int64_t nn, int64_t kk, float alpha, const float* x,
                       int64_t ldx, const float* y, int64_t ldy, float beta, float* z, int64_t ldz) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, static_cast<int>(mm), static_cast<int>(nn), static_cast<int>(kk),
                alpha, x, static_cast<int>(ldx), y, static_cast<int>(ldy), beta, z, static_cast<int>(ldz));
  };
  lr_queries_.resize(static_cast<size_t>(rows * d));  // queries, contiguous [rows x d]
  for (int64_t i = 0; i < a.m; ++i) std::copy_n(a.q + i * a.q_stride, a.group * d, lr_queries_.data() + i * a.group * d);
  scores_.resize(static_cast<size_t>(rows * n));  // [rows x n]
  lr_positions_.resize(static_cast<size_t>(n));
  lr_latent_.resize(static_cast<size_t>(rows * r_max));
  if (!a.pre_rope_keys) {
    // q_z [rows x r_max] = Q [rows x d] . U_k[:r_max]^T, once (small: plain loops)
    for (int64_t row = 0; row < rows; ++row) {
      const float* q = lr_queries_.data() + row * d;
      for (int64_t k = 0; k < r_max; ++k) {
        const float* u = a.key_basis + k * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < d; ++i) dot += q[i] * u[i];
        lr_latent_[static_cast<size_t>(row * r_max + k)] = dot;
      }
    }
  }
  // Scores: bucket b fills columns [column, column + n_b) of every row.
  int64_t column = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    const auto& bucket = a.buckets[b];
    const int64_t r = bucket.rank;
    std::copy_n(bucket.positions, bucket.n, lr_positions_.data() + column);
    if (bucket.n == 0) continue;
    if (a.pre_rope_keys) {
      // keys [n_b x d] = Z_k [n_b x r] . U_k[:r], rotated to their positions; scores = scale * Q . keys^T
      lr_keys_.resize(static_cast<size_t>(bucket.n * d));
      gemm(CblasNoTrans, bucket.n, d, r, 1.0f, bucket.key_coefficients, r, a.key_basis, d, 0.0f, lr_keys_.data(), d);
      rope(lr_keys_.data(), bucket.n, 1, d, bucket.positions, a.rope_base);
      gemm(CblasTrans, rows, bucket.n, d, a.scale, lr_queries_.data(), d, lr_keys_.data(), d, 0.0f,
           scores_.data() + column, n);
    } else if (a.m == 1) {  // decode: read each token's coefficients once for the whole group
      for (int64_t t = 0; t < bucket.n; ++t) {
        const float* z = bucket.key_coefficients + t * r;
        for (int64_t row = 0; row < rows; ++row) {
          const float* qz = lr_latent_.data() + row * r_max;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t k = 0; k < r; ++k) dot += qz[k] * z[k];
          scores_[static_cast<size_t>(row * n + column + t)] = dot * a.scale;
        }
      }
    } else {
      gemm(CblasTrans, rows, bucket.n, r, a.scale, lr_latent_.data(), r_max, bucket.key_coefficients, r, 0.0f,
           scores_.data() + column, n);
    }
    column += bucket.n;
  }
  // Causal mask + one softmax per row over every bucket (masked entries exactly 0), lse.
  for (int64_t row = 0; row < rows; ++row) {
    float* s = scores_.data() + row * n;
    const int32_t q_position = a.q_positions[row / a.group];
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      if (lr_positions_[static_cast<size_t>(t)] > q_position) s[t] = -std::numeric_limits<float>::infinity();
      row_max = std::max(row_max, s[t]);
    }
    if (row_max == -std::numeric_limits<float>::infinity()) {
      std::fill_n(s, n, 0.0f);
      a.lse[row] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float sum = exp_shifted_sum(s, n, row_max);  // masked: e^-87 at most, nothing beside >= 1
    const float inv_sum = 1.0f / sum;
    for (int64_t t = 0; t < n; ++t) s[t] = lr_positions_[static_cast<size_t>(t)] > q_position ? 0.0f : s[t] * inv_sum;
    a.lse[row] = row_max + std::log(sum);
  }
  // a_z [rows x r_max] = sum over buckets of P_b [rows x n_b] . Z_v,b [n_b x r_b] (first r_b coordinates)
  std::fill(lr_latent_.begin(), lr_latent_.end(), 0.0f);
  column = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    const auto& bucket = a.buckets[b];
    const int64_t r = bucket.rank;
    if (bucket.n == 0) continue;
    if (a.m == 1) {
      for (int64_t t = 0; t < bucket.n; ++t) {
        const float* z = bucket.value_coefficients + t * r;
        for (int64_t row = 0; row < rows; ++row) {
          const float p = scores_[static_cast<size_t>(row * n + column + t)];
          float* acc = lr_latent_.data() + row * r_max;
#pragma omp simd
          for (int64_t k = 0; k < r; ++k) acc[k] += p * z[k];
        }
      }
    } else {
      gemm(CblasNoTrans, rows, r, bucket.n, 1.0f, scores_.data() + column, n, bucket.value_coefficients, r, 1.0f,
           lr_latent_.data(), r_max);
    }
    column += bucket.n;
  }
  // out [rows x d] = a_z . U_v[:r_max], once (small: plain loops)
  lr_out_.assign(static_cast<size_t>(rows * d), 0.0f);
  for (int64_t row = 0; row < rows; ++row) {
    float* out = lr_out_.data() + row * d;
    for (int64_t k = 0; k < r_max; ++k) {
      const float c = lr_latent_[static_cast<size_t>(row * r_max + k)];
      const float* u = a.value_basis + k * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) out[i] += c * u[i];
    }
  }
  for (int64_t i = 0; i < a.m; ++i) std::copy_n(lr_out_.data() + i * a.group * d, a.group * d, a.out + i * a.out_stride);
}

}  // namespace kvshrink::kernels::cpu
