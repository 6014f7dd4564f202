// Attention over a head's KV blocks (kernels/backend.h HeadAttention). Decode (one query token)
// reads the blocks in place; prefill gathers the blocks' visible tokens into contiguous scratch
// once per call and multiplies query blocks against them with SGEMM.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {
namespace {

// Tokens of `blocks` at positions <= last (positions ascend across blocks).
int64_t visible_tokens(const HeadAttention& a, int32_t last) {
  int64_t n = 0;
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const auto& block = a.blocks[b];
    const int64_t seen = std::upper_bound(block.positions, block.positions + block.n, last) - block.positions;
    n += seen;
    if (seen < block.n) break;
  }
  return n;
}

}  // namespace

// One query token (decode): the group's query heads share each cached key and value, so every K/V
// row is read once per group instead of once per query head; decode attention is memory-bound.
void CpuBackend::decode_attention(const HeadAttention& a) {
  const int64_t d = a.head_dim;
  const int64_t n = visible_tokens(a, a.q_positions[0]);
  for (int64_t head = 0; head < a.group; ++head) std::fill_n(a.out + head * d, d, 0.0f);
  if (n == 0) {
    if (a.lse) std::fill_n(a.lse, a.group, -std::numeric_limits<float>::infinity());
    return;
  }
  scores_.resize(static_cast<size_t>(a.group * n));  // [group x n]
  for (int64_t b = 0, t = 0; t < n; ++b) {
    const auto& block = a.blocks[b];
    for (int64_t i = 0; i < block.n && t < n; ++i, ++t) {
      const float* key = block.keys + i * d;
      for (int64_t head = 0; head < a.group; ++head) {
        const float* q = a.q + head * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < d; ++k) dot += q[k] * key[k];
        scores_[head * n + t] = dot * a.scale;
      }
    }
  }
  inv_sums_.resize(static_cast<size_t>(a.group));
  float* inv_sum = inv_sums_.data();
  for (int64_t head = 0; head < a.group; ++head) {
    float* row = scores_.data() + head * n;
    const float row_max = max_of(row, n);
    const float sum = exp_shifted_sum(row, n, row_max);
    inv_sum[head] = 1.0f / sum;
    if (a.lse) a.lse[head] = row_max + std::log(sum);
    if (a.track_mass) {
      // row holds exp(s - max): probability = row * weight, normalised locally or by the reference
      const float weight =
          (a.lse_reference ? std::exp(row_max - a.lse_reference[head]) : inv_sum[head]) / a.group;
      for (int64_t b = 0, t = 0; t < n; ++b) {
        for (int64_t i = 0; i < a.blocks[b].n && t < n; ++i, ++t) a.blocks[b].mass[i] += row[t] * weight;
      }
    }
  }
  for (int64_t b = 0, t = 0; t < n; ++b) {
    const auto& block = a.blocks[b];
    for (int64_t i = 0; i < block.n && t < n; ++i, ++t) {
      const float* value = block.values + i * d;
      for (int64_t head = 0; head < a.group; ++head) {
        const float p = scores_[head * n + t] * inv_sum[head];
        float* out = a.out + head * d;
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) out[k] += p * value[k];
      }
    }
  }
}

// kv_keys_, kv_values_, kv_positions_ [n_kv] = the tokens every query of the call can see;
// kv_mass_ zeroed when the call tracks mass.
void CpuBackend::gather_blocks(const HeadAttention& a) {
  const int64_t d = a.head_dim;
  const int32_t last = *std::max_element(a.q_positions, a.q_positions + a.m);
  const int64_t n = visible_tokens(a, last);
  kv_keys_.resize(static_cast<size_t>(n * d));
  kv_values_.resize(kv_keys_.size());
  kv_positions_.resize(static_cast<size_t>(n));
  for (int64_t b = 0, t = 0; t < n; ++b) {
    const int64_t take = std::min(a.blocks[b].n, n - t);
    std::copy_n(a.blocks[b].keys, take * d, kv_keys_.data() + t * d);
    std::copy_n(a.blocks[b].values, take * d, kv_values_.data() + t * d);
    std::copy_n(a.blocks[b].positions, take, kv_positions_.data() + t);
    t += take;
  }
  if (a.track_mass) kv_mass_.assign(static_cast<size_t>(n), 0.0f);
}

void CpuBackend::attention(const HeadAttention& a) {
  if (a.m == 1) {
    decode_attention(a);
    return;
  }
  gather_blocks(a);
  prefill_attention(a);
  if (!a.track_mass) return;
  for (int64_t b = 0, t = 0; t < static_cast<int64_t>(kv_mass_.size()); ++b) {
    for (int64_t i = 0; i < a.blocks[b].n && t < static_cast<int64_t>(kv_mass_.size()); ++i, ++t)
      a.blocks[b].mass[i] += kv_mass_[t];
  }
}

// Over the gathered tokens. Queries go in blocks of kQueryBlock tokens; a block only multiplies
// against the cached tokens it can see (positions ascending), so causal prefill does about half
// the dense work.
void CpuBackend::prefill_attention(const HeadAttention& a) {
  constexpr int64_t kQueryBlock = 128;
  const int d = static_cast<int>(a.head_dim);
  const float* keys = kv_keys_.data();
  const float* values = kv_values_.data();
  const int32_t* kv_positions = kv_positions_.data();
  const int32_t* kv_end = kv_positions + kv_positions_.size();
  for (int64_t block_begin = 0; block_begin < a.m; block_begin += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, a.m - block_begin);
    const int32_t* q_pos = a.q_positions + block_begin;
    const int32_t last_pos = *std::max_element(q_pos, q_pos + rows);
    const int64_t n_visible = std::upper_bound(kv_positions, kv_end, last_pos) - kv_positions;
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
        cblas_sgemv(CblasRowMajor, CblasNoTrans, nv, d, a.scale, keys, d, q, 1, 0.0f, scores, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), nv, d, a.scale, q,
                    static_cast<int>(a.q_stride), keys, d, 0.0f, scores, nv);
      }
      // Causal mask + softmax per row; masked entries become exactly 0.
      for (int64_t i = 0; i < rows; ++i) {
        float* row = scores + i * n_visible;
        const int64_t seen =
            std::upper_bound(kv_positions, kv_positions + n_visible, q_pos[i]) - kv_positions;
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
        if (a.track_mass) {
          const float weight =
              (a.lse_reference ? std::exp(lse - a.lse_reference[lse_index]) : 1.0f) / a.group;
          for (int64_t t = 0; t < seen; ++t) kv_mass_[t] += row[t] * weight;
        }
      }
      // out[rows x d] = scores[rows x n_visible] . values[n_visible x d]
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasTrans, nv, d, 1.0f, values, d, scores, 1, 0.0f, out, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), d, nv, 1.0f, scores,
                    nv, values, d, 0.0f, out, static_cast<int>(a.out_stride));
      }
    }
  }
}

}  // namespace kvshrink::kernels::cpu
