// Attention over a head's KV blocks (kernels/backend.h HeadAttention), f16 or f32 elements or KIVI
// groups, accumulated in f32. Decode (one query token) over f16/f32 reads the blocks in place;
// prefill, and decode over quantized blocks, gather the blocks' visible tokens into contiguous f32
// scratch once per call (dequantizing) and multiply query blocks against them with SGEMM.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/head_attention.h"
#include "kernels/cpu/kivi_group.h"
#include "kernels/cpu/kv_elements.h"
#include "kernels/cpu/simd.h"
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

// Decode over one KV block of T elements (float, or uint16_t IEEE halves widened on load), rows
// of head_dim = NV * kLanes floats held in NV registers (NV = 0: any head_dim, plain loops).
// scores: the block's columns of the [group x n] score rows.
template <int NV, typename T>
struct BlockKernels {
  // scores[j * n + t] = scale * q_j . key t, for the group's heads j and the block's first count tokens
  static void scores(const HeadAttention& a, const T* keys, int64_t count, float* scores, int64_t n) {
    const int64_t d = a.head_dim;
    for (int64_t j = 0; j < a.group; ++j) {
      const float* q = a.q + j * d;
      float* row = scores + j * n;
      if constexpr (NV == 0) {
        for (int64_t t = 0; t < count; ++t) {
          const T* key = keys + t * d;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t k = 0; k < d; ++k) dot += q[k] * element_f32(key[k]);
          row[t] = dot * a.scale;
        }
      } else {
        Vec qv[NV];
        for (int c = 0; c < NV; ++c) qv[c] = vload(q + c * kLanes);
        for (int64_t t = 0; t < count; ++t) {
          const T* key = keys + t * d;
          Vec acc = vzero();
          for (int c = 0; c < NV; ++c) acc = vfma(qv[c], vload(key + c * kLanes), acc);
          row[t] = vsum(acc) * a.scale;
        }
      }
    }
  }

  // out_j += sum over the block's first count tokens t of probs[j * n + t] * inv_sum[j] * value t
  static void values(const HeadAttention& a, const T* values, int64_t count, const float* probs, int64_t n,
                     const float* inv_sum) {
    const int64_t d = a.head_dim;
    for (int64_t j = 0; j < a.group; ++j) {
      float* out = a.out + j * d;
      const float* p = probs + j * n;
      if constexpr (NV == 0) {
        for (int64_t t = 0; t < count; ++t) {
          const float pt = p[t] * inv_sum[j];
          const T* value = values + t * d;
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) out[k] += pt * element_f32(value[k]);
        }
      } else {
        Vec acc[NV];
        for (int c = 0; c < NV; ++c) acc[c] = vload(out + c * kLanes);
        for (int64_t t = 0; t < count; ++t) {
          const Vec pt = vset1(p[t] * inv_sum[j]);
          for (int c = 0; c < NV; ++c) acc[c] = vfma(pt, vload(values + t * d + c * kLanes), acc[c]);
        }
        for (int c = 0; c < NV; ++c) vstore(out + c * kLanes, acc[c]);
      }
    }
  }
};

// A token's mass receives one probability (or a block's partial mass): summed, or the largest kept.
inline void add_mass(const HeadAttention& a, float& mass, float p) {
  mass = a.mass_max ? std::max(mass, p) : mass + p;
}

// Softmax of the score rows [group x n] in place, to exp(s - max); inv_sum[j] = 1 / row j's sum;
// lse and the mass as HeadAttention says.
void softmax_rows(const HeadAttention& a, float* scores, int64_t n, float* inv_sum) {
  for (int64_t head = 0; head < a.group; ++head) {
    float* row = scores + head * n;
    const float row_max = max_of(row, n);
    const float sum = exp_shifted_sum(row, n, row_max);
    inv_sum[head] = 1.0f / sum;
    if (a.lse) a.lse[head] = row_max + std::log(sum);
    if (a.track_mass) {
      // row holds exp(s - max): probability = row * weight, normalised locally or by the reference
      const float probability = a.lse_reference ? std::exp(row_max - a.lse_reference[head]) : inv_sum[head];
      const float weight = a.mass_max ? probability : probability / a.group;
      for (int64_t b = 0, t = 0; t < n; ++b) {
        for (int64_t i = 0; i < a.blocks[b].n && t < n; ++i, ++t)
          add_mass(a, a.blocks[b].mass[i], row[t] * weight);
      }
    }
  }
}

// One query token (decode): the group's query heads share each cached key and value, so every K/V
// block is read from memory once per group (then from L1 for the other heads); one pass over the
// blocks for the scores, one for the values.
template <int NV, typename T>
void decode_attention(const HeadAttention& a, AttentionScratch& s) {
  const int64_t d = a.head_dim;
  const int64_t n = visible_tokens(a, a.q_positions[0]);
  if (a.out) {
    for (int64_t head = 0; head < a.group; ++head) std::fill_n(a.out + head * d, d, 0.0f);
  }
  if (n == 0) {
    if (a.lse) std::fill_n(a.lse, a.group, -std::numeric_limits<float>::infinity());
    return;
  }
  s.scores.resize(static_cast<size_t>(a.group * n));
  float* scores = s.scores.data();  // [group x n]
  for (int64_t b = 0, t = 0; t < n; t += a.blocks[b++].n) {
    BlockKernels<NV, T>::scores(a, static_cast<const T*>(a.blocks[b].keys), std::min(a.blocks[b].n, n - t),
                                scores + t, n);
  }
  s.inv_sums.resize(static_cast<size_t>(a.group));
  softmax_rows(a, scores, n, s.inv_sums.data());
  if (!a.out) return;
  for (int64_t b = 0, t = 0; t < n; t += a.blocks[b++].n) {
    BlockKernels<NV, T>::values(a, static_cast<const T*>(a.blocks[b].values), std::min(a.blocks[b].n, n - t),
                                scores + t, n, s.inv_sums.data());
  }
}

// decode_attention with the head_dim's rows in registers where it is a small multiple of kLanes.
template <typename T>
void decode_attention_any(const HeadAttention& a, AttentionScratch& s) {
  switch (a.head_dim % kLanes == 0 ? a.head_dim / kLanes : 0) {
    case 2:
      return decode_attention<2, T>(a, s);
    case 4:
      return decode_attention<4, T>(a, s);
    case 8:
      return decode_attention<8, T>(a, s);
    case 16:
      return decode_attention<16, T>(a, s);
    default:
      return decode_attention<0, T>(a, s);
  }
}

// The blocks of one call come from one segment: one element type, quantized or not.
KvDtype blocks_dtype(const HeadAttention& a) {
  return a.n_blocks > 0 ? a.blocks[0].dtype : KvDtype::kF32;
}
bool blocks_quantized(const HeadAttention& a) {
  return a.n_blocks > 0 && a.blocks[0].quant_bits != 0;
}

// s.keys, s.values (as f32), s.positions [n_kv] = the tokens every query of the call can see;
// s.mass zeroed when the call tracks mass.
void gather_blocks(const HeadAttention& a, AttentionScratch& s) {
  const int64_t d = a.head_dim;
  const int32_t last = *std::max_element(a.q_positions, a.q_positions + a.m);
  const int64_t n = visible_tokens(a, last);
  s.keys.resize(static_cast<size_t>(n * d));
  s.values.resize(s.keys.size());
  s.positions.resize(static_cast<size_t>(n));
  for (int64_t b = 0, t = 0; t < n; ++b) {
    const int64_t take = std::min(a.blocks[b].n, n - t);
    const auto& block = a.blocks[b];
    if (block.quant_bits != 0) {
      dequantize_kivi_group(static_cast<const std::byte*>(block.keys), d, block.quant_group, block.quant_bits,
                            take, s.keys.data() + t * d, s.values.data() + t * d);
    } else {
      kv_to_f32(block.keys, block.dtype, s.keys.data() + t * d, take * d);
      kv_to_f32(block.values, block.dtype, s.values.data() + t * d, take * d);
    }
    std::copy_n(a.blocks[b].positions, take, s.positions.data() + t);
    t += take;
  }
  if (a.track_mass) s.mass.assign(static_cast<size_t>(n), 0.0f);
}

// Over the gathered tokens. Queries go in blocks of kPrefillQueryBlock tokens; a block only multiplies
// against the cached tokens it can see (positions ascending), so causal prefill does about half
// the dense work.
void prefill_attention(const HeadAttention& a, AttentionScratch& s) {
  const int d = static_cast<int>(a.head_dim);
  const float* keys = s.keys.data();
  const float* values = s.values.data();
  const int32_t* kv_positions = s.positions.data();
  const int32_t* kv_end = kv_positions + s.positions.size();
  for (int64_t block_begin = 0; block_begin < a.m; block_begin += kPrefillQueryBlock) {
    const int64_t rows = std::min(kPrefillQueryBlock, a.m - block_begin);
    const int32_t* q_pos = a.q_positions + block_begin;
    const int32_t last_pos = *std::max_element(q_pos, q_pos + rows);
    const int64_t n_visible = std::upper_bound(kv_positions, kv_end, last_pos) - kv_positions;
    if (n_visible == 0) {
      for (int64_t head = 0; head < a.group; ++head) {
        for (int64_t i = 0; i < rows; ++i) {
          if (a.out) std::fill_n(a.out + (block_begin + i) * a.out_stride + head * d, d, 0.0f);
          if (a.lse) a.lse[(block_begin + i) * a.group + head] = -std::numeric_limits<float>::infinity();
        }
      }
      continue;
    }
    s.scores.resize(static_cast<size_t>(rows * n_visible));
    float* scores = s.scores.data();
    const int nv = static_cast<int>(n_visible);
    for (int64_t head = 0; head < a.group; ++head) {
      const float* q = a.q + block_begin * a.q_stride + head * d;
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
          const float probability = a.lse_reference ? std::exp(lse - a.lse_reference[lse_index]) : 1.0f;
          const float weight = a.mass_max ? probability : probability / a.group;
          for (int64_t t = 0; t < seen; ++t) add_mass(a, s.mass[t], row[t] * weight);
        }
      }
      if (!a.out) continue;
      // out[rows x d] = scores[rows x n_visible] . values[n_visible x d]
      float* out = a.out + block_begin * a.out_stride + head * d;
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasTrans, nv, d, 1.0f, values, d, scores, 1, 0.0f, out, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), d, nv, 1.0f, scores,
                    nv, values, d, 0.0f, out, static_cast<int>(a.out_stride));
      }
    }
  }
}

}  // namespace

void head_attention(const HeadAttention& a, AttentionScratch& s) {
  if (a.m == 1 && !blocks_quantized(a)) {  // quantized blocks are dequantized by the gather
    if (blocks_dtype(a) == KvDtype::kF16) {
      decode_attention_any<uint16_t>(a, s);
    } else {
      decode_attention_any<float>(a, s);
    }
    return;
  }
  gather_blocks(a, s);
  prefill_attention(a, s);
  if (!a.track_mass) return;
  const auto n = static_cast<int64_t>(s.mass.size());
  for (int64_t b = 0, t = 0; t < n; ++b) {
    for (int64_t i = 0; i < a.blocks[b].n && t < n; ++i, ++t) add_mass(a, a.blocks[b].mass[i], s.mass[t]);
  }
}

AttentionScratch& thread_attention_scratch() {
  thread_local AttentionScratch scratch;
  return scratch;
}

}  // namespace kvshrink::kernels::cpu
