#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemv.h"
#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {

// f32 weights: OpenBLAS directly. Packed weights: one token reads the packed rows (packed_gemv);
// several tokens dequantize kDequantRows rows at a time into scratch and multiply with SGEMM, which
// costs one dequantization of the weights per prefill chunk (~1% of the GEMM time at 512 tokens).
void CpuBackend::matmul(const Weight& w, const float* x, float* y, int64_t m) {
  constexpr int64_t kDequantRows = 512;
  const auto rows = static_cast<int>(w.rows());
  const auto cols = static_cast<int>(w.cols());
  if (w.dtype() == TensorType::F32) {
    if (m == 1) {  // sgemm with M = 1 is ~30x slower than sgemv in OpenBLAS
      cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w.f32(), cols, x, 1, 0.0f, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), rows, cols, 1.0f, x, cols,
                  w.f32(), cols, 0.0f, y, rows);
    }
    return;
  }
  if (m == 1) {
    packed_gemv(w, x, y, row_scratch_);
    return;
  }
  for (int64_t first = 0; first < w.rows(); first += kDequantRows) {
    const int64_t n = std::min(kDequantRows, w.rows() - first);
    row_scratch_.resize(static_cast<size_t>(n * cols));
    for (int64_t r = 0; r < n; ++r)
      dequantize_row(w.dtype(), w.row(first + r), row_scratch_.data() + r * cols, cols);
    // y[:, first:first+n] = x[m x cols] . scratch[n x cols]^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), cols, 1.0f,
                x, cols, row_scratch_.data(), cols, 0.0f, y + first, rows);
  }
}

void CpuBackend::rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) {
  for (int64_t row = 0; row < m; ++row) {
    const float* xr = x + row * n;
    float* yr = y + row * n;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < n; ++i) sum_squares += static_cast<double>(xr[i]) * xr[i];
    const auto inv_rms = static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv_rms * gamma[i];
  }
}

void CpuBackend::rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                      float freq_base) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(half);  // freq_base^(-2i/head_dim)
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(freq_base), -2.0 * static_cast<double>(i) / head_dim);
  }
  std::vector<float> cos_theta(half), sin_theta(half);
  for (int64_t token = 0; token < m; ++token) {
    for (int64_t i = 0; i < half; ++i) {
      const double theta = positions[token] * inv_freq[i];
      cos_theta[i] = static_cast<float>(std::cos(theta));
      sin_theta[i] = static_cast<float>(std::sin(theta));
    }
    for (int64_t head = 0; head < n_heads; ++head) {
      float* v = x + (token * n_heads + head) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[2 * i];
        const float x1 = v[2 * i + 1];
        v[2 * i] = x0 * cos_theta[i] - x1 * sin_theta[i];
        v[2 * i + 1] = x0 * sin_theta[i] + x1 * cos_theta[i];
      }
    }
  }
}

void CpuBackend::silu_mul(float* gate, const float* up, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + fast_exp(-g)) * up[i];
  }
}

void CpuBackend::add(float* y, const float* x, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

// One query token (decode): the group's query heads share each cached key and value, so every K/V
// row is read once per group instead of once per query head; decode attention is memory-bound.
void CpuBackend::decode_attention(const HeadAttention& a) {
  const int64_t d = a.head_dim;
  const int64_t n =
      std::upper_bound(a.kv_positions, a.kv_positions + a.n_kv, a.q_positions[0]) - a.kv_positions;
  for (int64_t head = 0; head < a.group; ++head) std::fill_n(a.out + head * d, d, 0.0f);
  if (n == 0) {
    if (a.lse) std::fill_n(a.lse, a.group, -std::numeric_limits<float>::infinity());
    return;
  }
  scores_.resize(static_cast<size_t>(a.group * n));  // [group x n]
  for (int64_t t = 0; t < n; ++t) {
    const float* key = a.keys + t * d;
    for (int64_t head = 0; head < a.group; ++head) {
      const float* q = a.q + head * d;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < d; ++i) dot += q[i] * key[i];
      scores_[head * n + t] = dot * a.scale;
    }
  }
  std::vector<float> inv_sum(static_cast<size_t>(a.group));
  for (int64_t head = 0; head < a.group; ++head) {
    float* row = scores_.data() + head * n;
    const float row_max = max_of(row, n);
    const float sum = exp_shifted_sum(row, n, row_max);
    inv_sum[head] = 1.0f / sum;
    if (a.lse) a.lse[head] = row_max + std::log(sum);
    if (a.key_mass) {
      // row holds exp(s - max): probability = row * weight, normalised locally or by the reference
      const float weight =
          (a.lse_reference ? std::exp(row_max - a.lse_reference[head]) : inv_sum[head]) / a.group;
      for (int64_t t = 0; t < n; ++t) a.key_mass[t] += row[t] * weight;
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* value = a.values + t * d;
    for (int64_t head = 0; head < a.group; ++head) {
      const float p = scores_[head * n + t] * inv_sum[head];
      float* out = a.out + head * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) out[i] += p * value[i];
    }
  }
}

// Queries go in blocks of kQueryBlock tokens; a block only multiplies against the cached tokens
// it can see (positions ascending), so causal prefill does about half the dense work.
void CpuBackend::attention(const HeadAttention& a) {
  constexpr int64_t kQueryBlock = 128;
  if (a.m == 1) {
    decode_attention(a);
    return;
  }
  const int d = static_cast<int>(a.head_dim);
  const int32_t* kv_end = a.kv_positions + a.n_kv;
  for (int64_t block_begin = 0; block_begin < a.m; block_begin += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, a.m - block_begin);
    const int32_t* q_pos = a.q_positions + block_begin;
    const int32_t last_pos = *std::max_element(q_pos, q_pos + rows);
    const int64_t n_visible = std::upper_bound(a.kv_positions, kv_end, last_pos) - a.kv_positions;
    if (n_visible == 0) {
      for (int64_t head = 0; head < a.group; ++head) {
        for (int64_t i = 0; i < rows; ++i) {
          std::fill_n(a.out + (block_begin + i) * a.out_stride + head * d, d, 0.0f);
          if (a.lse) a.lse[(block_begin + i) * a.group + head] = -std::numeric_limits<float>::infinity();
        }
      }
      continue;
    }
    scores_.resize(static_cast<size_t>(rows * n_visible));
    float* scores = scores_.data();
    const int nv = static_cast<int>(n_visible);
    for (int64_t head = 0; head < a.group; ++head) {
      const float* q = a.q + block_begin * a.q_stride + head * d;
      float* out = a.out + block_begin * a.out_stride + head * d;
      // scores[rows x n_visible] = scale * q[rows x d] . keys[n_visible x d]^T
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, nv, d, a.scale, a.keys, d, q, 1, 0.0f, scores, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), nv, d, a.scale, q,
                    static_cast<int>(a.q_stride), a.keys, d, 0.0f, scores, nv);
      }
      // Causal mask + softmax per row; masked entries become exactly 0.
      for (int64_t i = 0; i < rows; ++i) {
        float* row = scores + i * n_visible;
        const int64_t seen =
            std::upper_bound(a.kv_positions, a.kv_positions + n_visible, q_pos[i]) - a.kv_positions;
        const int64_t lse_index = (block_begin + i) * a.group + head;
        if (seen == 0) {
          std::fill_n(row, n_visible, 0.0f);
          if (a.lse) a.lse[lse_index] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float row_max = max_of(row, seen);
        const float sum = exp_shifted_sum(row, seen, row_max);
        const float inv_sum = 1.0f / sum;
        for (int64_t t = 0; t < seen; ++t) row[t] *= inv_sum;
        std::fill(row + seen, row + n_visible, 0.0f);
        const float lse = row_max + std::log(sum);
        if (a.lse) a.lse[lse_index] = lse;
        if (a.key_mass) {
          const float weight =
              (a.lse_reference ? std::exp(lse - a.lse_reference[lse_index]) : 1.0f) / a.group;
          for (int64_t t = 0; t < seen; ++t) a.key_mass[t] += row[t] * weight;
        }
      }
      // out[rows x d] = scores[rows x n_visible] . values[n_visible x d]
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasTrans, nv, d, 1.0f, a.values, d, scores, 1, 0.0f, out, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), d, nv, 1.0f, scores,
                    nv, a.values, d, 0.0f, out, static_cast<int>(a.out_stride));
      }
    }
  }
}

}  // namespace kvshrink::kernels::cpu
