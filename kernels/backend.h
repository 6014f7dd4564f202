// The backend-neutral compute interface the engine calls. The CPU backend (kernels/cpu/) runs on
// host memory with OpenBLAS; a CUDA backend will implement the same calls on device memory.
//
// Activations are row-major [tokens x features] float32 arrays.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "kernels/kv_dtype.h"
#include "kernels/weight.h"

namespace kvshrink::kernels {

// A run of one head's full-dimension tokens in one KV block (kvstore/head_segment.h): keys and
// values [n x head_dim] row-major of `dtype` elements (keys with RoPE applied), positions [n]
// ascending, and the accumulated attention [n] when the store tracks it (else null).
// Quantized (quant_bits 8, 4 or 2): keys points at one KIVI group of quant_group tokens
// (kernels/cpu/kivi_group.h: codes with f16 scales and zeros, K per channel, V per token), of which
// the view reads the first n; values and dtype are unused. CPU backend only for now.
struct KvBlockView {
  const void* keys;
  const void* values;
  const int32_t* positions;
  float* mass;
  int64_t n;
  KvDtype dtype = KvDtype::kF32;  // the store's segments say f16 (its default)
  int32_t quant_bits = 0;         // 0: not quantized
  int32_t quant_group = 0;
};

// Attention of one KV head and the `group` query heads that read it, for m query tokens over
// the cached tokens of `blocks` (the new tokens already appended), in position order across
// blocks. Causal by position: query i sees cached token t iff its position <= q_positions[i].
struct HeadAttention {
  const float* q;    // query head j of token i at q + i*q_stride + j*head_dim (RoPE applied)
  int64_t q_stride;  // floats between consecutive tokens
  float* out;        // same layout as q, out_stride between tokens; null: only the mass is wanted
  int64_t out_stride;
  const KvBlockView* blocks;  // [n_blocks], positions ascending across them
  int64_t n_blocks;
  const int32_t* q_positions;  // [m]
  int64_t m;
  int64_t group;
  int64_t head_dim;
  float scale;  // 1 / sqrt(head_dim)

  // Optional outputs, for attention split over several segments and for scoring presses:
  // lse[i*group + j] = log of the softmax denominator of query i, head j over these tokens
  // (natural log, max included; -inf when it sees none). Merge segments with Backend::merge_attention().
  float* lse = nullptr;
  // With track_mass, each block's mass[t] += mean over the group's heads of sum over the m queries
  // of the probability given to token t (H2O's accumulated attention). Probabilities are
  // normalised over these tokens, or, when lse_reference [m x group] is given, over a larger set
  // whose log-denominators it holds.
  bool track_mass = false;
  const float* lse_reference = nullptr;
  // With track_mass: mass[t] = max(mass[t], the largest probability any of the m queries and the
  // group's heads gives token t) instead of the sum above (KVzip's reconstruction scores).
  bool mass_max = false;
};

// Tokens of one head held at `rank` coefficients in a basis (kvstore/low_rank_segment.h).
struct LowRankBucket {
  const void* key_coefficients;    // [n x rank] of dtype
  const void* value_coefficients;  // [n x rank] of dtype
  const int32_t* positions;        // [n]
  int64_t n;
  int64_t rank;
  KvDtype dtype = KvDtype::kF32;  // the store's blocks say f16 (its default)
};

// Attention of m query tokens over a head's rank buckets, all in one basis. Post-RoPE keys: the
// query is projected into the key basis once, q_z = U_k[:r_max] q, and a token at rank r scores
// q_z[:r] . z_k. Pre-RoPE keys: each key is rebuilt, k = RoPE(U_k[:r]^T z_k, position), then
// dotted with q. One softmax over every bucket's tokens; values are summed in the basis,
// a_z = sum_t p_t z_v,t (a rank-r token adds to the first r coordinates), and projected back once:
// out = U_v[:r_max]^T a_z. Rows of q/out as in HeadAttention; tokens at positions after a query's
// are masked.
struct LowRankAttention {
  const float* q;
  int64_t q_stride;
  float* out;
  int64_t out_stride;
  float* lse;  // [m x group] log-denominators, as HeadAttention::lse (required)
  const LowRankBucket* buckets;
  int64_t n_buckets;
  const int32_t* q_positions;  // [m]
  const float* key_basis;      // [>= max rank x head_dim]: basis vector k at k * head_dim
  const float* value_basis;    // [>= max rank x head_dim]
  int64_t m;
  int64_t group;
  int64_t head_dim;
  bool pre_rope_keys;
  float rope_base;  // RoPE frequency base, used with pre_rope_keys
  float scale;      // 1 / sqrt(head_dim)
};

// What the matmuls of packed (quantized) weights multiply them with: the exact f32 activation rows
// (the default), or the rows quantized to 8 bits per 32-element block as llama.cpp's CPU matmuls do
// (kernels/cpu/q8_activations.h), every row of every such matmul whatever the row count, so a
// row's result does not depend on the rows it shares a step with. F32 weights always take f32.
enum class MatmulActivations { kF32, kQ8 };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // y[m x w.rows] = x[m x w.cols] . w^T
  virtual void matmul(const Weight& w, const float* x, float* y, int64_t m) = 0;
  // y[m x n] = x[m x k] . b[n x k]^T, all f32 row-major and contiguous (b: n rows of k floats, e.g.
  // the first n vectors of a basis)
  virtual void matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) = 0;
  // y[m x n] = x / sqrt(mean(x^2) + eps) * gamma[n], row by row (y may alias x)
  virtual void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) = 0;
  // x[m x n_heads x head_dim], rotated in place by position: pairs (2i, 2i+1) by
  // theta_i = pos * freq_base^(-2i/head_dim) (GGUF llama "NORM" convention)
  virtual void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                    float freq_base) = 0;
  // gate[i] = silu(gate[i]) * up[i]
  virtual void silu_mul(float* gate, const float* up, int64_t count) = 0;
  // y[i] += x[i]
  virtual void add(float* y, const float* x, int64_t count) = 0;
  // Independent attention calls, e.g. every (sequence, kv head) of a step: the same as making
  // each alone, in any order or at once, so no two may write the same out, lse or mass.
  virtual void attention(std::span<const HeadAttention> batch) = 0;
  void attention(const HeadAttention& args) { attention({&args, 1}); }
  virtual void low_rank_attention(std::span<const LowRankAttention> batch) = 0;  // likewise
  void low_rank_attention(const LowRankAttention& args) { low_rank_attention({&args, 1}); }
  // Online-softmax merge of the same queries' attention over a second token set (FlashInfer's
  // state merge). Before: out/lse hold the attention over set A, out_b/lse_b over set B; after:
  // out/lse hold it over A and B. Query head j of token i (i < m, j < group) at
  // out + i*out_stride + j*head_dim (out_b likewise with out_b_stride); its log-denominator at
  // lse[i*group + j] (lse_b likewise), -inf when its set holds no token the query sees.
  virtual void merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b,
                               int64_t out_b_stride, const float* lse_b, int64_t m, int64_t group,
                               int64_t head_dim) = 0;
  // Observation-window attention (scoring presses): out[t] for every token t of the blocks, in
  // order, = mean over the n_queries queries and the group's heads of softmax_t(scale * q . k_t),
  // causal by position. Query head j of query i at q + i*q_stride + j*head_dim.
  virtual void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions,
                                     int64_t n_queries, int64_t group, int64_t head_dim, float scale,
                                     std::span<const KvBlockView> blocks, float* out) = 0;
  // out[i x w.cols] = row tokens[i] of the (packed) embedding table w, dequantized
  virtual void embedding_rows(const Weight& w, const int32_t* tokens, int64_t n, float* out) = 0;

  // Memory the KV pool carves into blocks (kvstore/kv_memory_pool.h): host memory on CPU, device
  // memory on a GPU backend. Throws std::bad_alloc when none is left.
  virtual void* allocate_kv_memory(uint64_t bytes) = 0;
  virtual void free_kv_memory(void* memory, uint64_t bytes) = 0;
};

}  // namespace kvshrink::kernels
