// CpuBackend::low_rank_attention (kernels/backend.h): attention over tokens held as coefficients in
// a basis, all products through OpenBLAS.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {

void CpuBackend::low_rank_attention(const LowRankAttention& a) {
  const int64_t d = a.head_dim;
  const int64_t r = a.rank;
  const int64_t n = a.n_kv;
  const int64_t rows = a.m * a.group;  // query heads of all tokens, [token][head]
  const auto gemm = [](CBLAS_TRANSPOSE tb, int64_t mm, int64_t nn, int64_t kk, float alpha, const float* x,
                       int64_t ldx, const float* y, int64_t ldy, float* z, int64_t ldz) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, static_cast<int>(mm), static_cast<int>(nn), static_cast<int>(kk),
                alpha, x, static_cast<int>(ldx), y, static_cast<int>(ldy), 0.0f, z, static_cast<int>(ldz));
  };
  lr_queries_.resize(static_cast<size_t>(rows * d));  // queries, contiguous [rows x d]
  for (int64_t i = 0; i < a.m; ++i) std::copy_n(a.q + i * a.q_stride, a.group * d, lr_queries_.data() + i * a.group * d);
  scores_.resize(static_cast<size_t>(rows * n));  // [rows x n]
  if (n > 0) {
    if (!a.pre_rope_keys) {
      // q_z [rows x r] = Q [rows x d] . U_k[:r]^T (small: plain loops, a BLAS call costs more);
      // scores = scale * q_z . Z_k^T
      lr_latent_.resize(static_cast<size_t>(rows * r));
      for (int64_t row = 0; row < rows; ++row) {
        const float* q = lr_queries_.data() + row * d;
        for (int64_t k = 0; k < r; ++k) {
          const float* u = a.key_basis + k * d;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < d; ++i) dot += q[i] * u[i];
          lr_latent_[static_cast<size_t>(row * r + k)] = dot;
        }
      }
      if (a.m == 1) {  // decode: read each token's coefficients once for the whole group
        for (int64_t t = 0; t < n; ++t) {
          const float* z = a.key_coefficients + t * r;
          for (int64_t row = 0; row < rows; ++row) {
            const float* qz = lr_latent_.data() + row * r;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t k = 0; k < r; ++k) dot += qz[k] * z[k];
            scores_[static_cast<size_t>(row * n + t)] = dot * a.scale;
          }
        }
      } else {
        gemm(CblasTrans, rows, n, r, a.scale, lr_latent_.data(), r, a.key_coefficients, r, scores_.data(), n);
      }
    } else {
      // keys [n x d] = Z_k [n x r] . U_k[:r], rotated to their positions;  scores = scale * Q . keys^T
      lr_keys_.resize(static_cast<size_t>(n * d));
      gemm(CblasNoTrans, n, d, r, 1.0f, a.key_coefficients, r, a.key_basis, d, lr_keys_.data(), d);
      rope(lr_keys_.data(), n, 1, d, a.kv_positions, a.rope_base);
      gemm(CblasTrans, rows, n, d, a.scale, lr_queries_.data(), d, lr_keys_.data(), d, scores_.data(), n);
    }
  }
  // Causal mask + softmax per row (masked entries exactly 0), log-denominators to lse.
  for (int64_t row = 0; row < rows; ++row) {
    float* s = scores_.data() + row * n;
    const int32_t q_position = a.q_positions[row / a.group];
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      if (a.kv_positions[t] > q_position) s[t] = -std::numeric_limits<float>::infinity();
      row_max = std::max(row_max, s[t]);
    }
    if (row_max == -std::numeric_limits<float>::infinity()) {
      std::fill_n(s, n, 0.0f);
      a.lse[row] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float sum = exp_shifted_sum(s, n, row_max);  // masked: e^-87 at most, nothing beside >= 1
    const float inv_sum = 1.0f / sum;
    for (int64_t t = 0; t < n; ++t) s[t] = a.kv_positions[t] > q_position ? 0.0f : s[t] * inv_sum;
    a.lse[row] = row_max + std::log(sum);
  }
  // a_z [rows x r] = P [rows x n] . Z_v [n x r];  out [rows x d] = a_z . U_v[:r]
  lr_latent_.resize(static_cast<size_t>(rows * r));
  lr_out_.resize(static_cast<size_t>(rows * d));
  std::fill(lr_out_.begin(), lr_out_.end(), 0.0f);
  if (n > 0) {
    if (a.m == 1) {
      std::fill(lr_latent_.begin(), lr_latent_.end(), 0.0f);
      for (int64_t t = 0; t < n; ++t) {
        const float* z = a.value_coefficients + t * r;
        for (int64_t row = 0; row < rows; ++row) {
          const float p = scores_[static_cast<size_t>(row * n + t)];
          float* acc = lr_latent_.data() + row * r;
#pragma omp simd
          for (int64_t k = 0; k < r; ++k) acc[k] += p * z[k];
        }
      }
    } else {
      gemm(CblasNoTrans, rows, r, n, 1.0f, scores_.data(), n, a.value_coefficients, r, lr_latent_.data(), r);
    }
    for (int64_t row = 0; row < rows; ++row) {  // small: plain loops
      float* out = lr_out_.data() + row * d;
      for (int64_t k = 0; k < r; ++k) {
        const float c = lr_latent_[static_cast<size_t>(row * r + k)];
        const float* u = a.value_basis + k * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) out[i] += c * u[i];
      }
    }
  }
  for (int64_t i = 0; i < a.m; ++i) std::copy_n(lr_out_.data() + i * a.group * d, a.group * d, a.out + i * a.out_stride);
}

}  // namespace kvshrink::kernels::cpu
