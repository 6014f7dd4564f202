// CPU backend: GEMM/GEMV through OpenBLAS, which also owns the threads (one pool: a second one,
// e.g. OpenMP, would spin against it on few cores); element-wise work in vectorised loops.
#pragma once

#include <vector>

#include "kernels/backend.h"

namespace kvshrink::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }
  void matmul(const Weight& w, const float* x, float* y, int64_t m) override;
  void matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) override;
  void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) override;
  void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
            float freq_base) override;
  void silu_mul(float* gate, const float* up, int64_t count) override;
  void add(float* y, const float* x, int64_t count) override;
  void attention(const HeadAttention& args) override;
  void low_rank_attention(const LowRankAttention& args) override;  // low_rank_attention.cpp
  void merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b, int64_t out_b_stride,
                       const float* lse_b, int64_t m, int64_t group,
                       int64_t head_dim) override;  // merge_attention.cpp
  void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t n_queries,
                             int64_t group, int64_t head_dim, float scale,
                             std::span<const KvBlockView> blocks, float* out) override;
  void embedding_rows(const Weight& w, const int32_t* tokens, int64_t n, float* out) override;
  void* allocate_kv_memory(uint64_t bytes) override;
  void free_kv_memory(void* memory, uint64_t bytes) override;

 private:
  // paged_attention.cpp
  void decode_attention(const HeadAttention& args);
  void gather_blocks(const HeadAttention& args);
  void prefill_attention(const HeadAttention& args);

  std::vector<float> scores_;  // scratch: [query block x n_kv] attention probabilities
  // scratch of prefill attention: the blocks' tokens gathered contiguously, keys and values
  // [n_kv x head_dim], positions [n_kv], accumulated attention [n_kv]
  std::vector<float> kv_keys_, kv_values_, kv_mass_;
  std::vector<int32_t> kv_positions_;
  std::vector<float> inv_sums_;     // scratch of decode attention: [group] 1 / softmax denominators
  std::vector<float> row_scratch_;  // scratch: dequantized weight rows
  // scratch of low_rank_attention: queries [m*group x d], projected queries, then value sums
  // [m*group x max rank], rebuilt keys [bucket tokens x d], outputs [m*group x d], positions of
  // every bucket's tokens
  std::vector<float> lr_queries_, lr_latent_, lr_keys_, lr_out_;
  std::vector<int32_t> lr_positions_;
};

}  // namespace kvshrink::kernels::cpu
