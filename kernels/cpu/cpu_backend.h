// CPU backend: f32 GEMM through OpenBLAS; packed-weight matmuls of a few tokens and decode
// attention on the compute threads (packed_gemm_small_threads.h), which park while OpenBLAS's own
// threads run (a spinning second pool, e.g. OpenMP's, would fight them on few cores); element-wise
// work in vectorised loops. With MatmulActivations::kQ8, packed-weight matmuls quantize their
// activation rows (q8_activations.h): Q4_1 / Q8_0 weights multiply them in integer dot products
// (packed_gemm_q8.h) for any row count; other packings take the f32 kernels on the quantized values.
#pragma once

#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/q8_activations.h"

namespace kvshrink::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(MatmulActivations activations = MatmulActivations::kF32) : activations_(activations) {}
  std::string_view name() const override {
    return activations_ == MatmulActivations::kQ8 ? "cpu (q8 activations)" : "cpu";
  }
  void matmul(const Weight& w, const float* x, float* y, int64_t m) override;
  void matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) override;
  void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) override;
  void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
            float freq_base) override;
  void silu_mul(float* gate, const float* up, int64_t count) override;
  void add(float* y, const float* x, int64_t count) override;
  using Backend::attention;
  using Backend::low_rank_attention;
  // One query token's calls (post-RoPE keys for low rank) run on the compute threads, one task per
  // call; the others (prefill, pre-RoPE keys) run one after another on OpenBLAS's threads.
  void attention(std::span<const HeadAttention> batch) override;
  void low_rank_attention(std::span<const LowRankAttention> batch) override;
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
  MatmulActivations activations_;
  std::vector<float> row_scratch_;  // scratch: dequantized weight rows
  Q8Activations quantized_rows_;    // scratch: kQ8's activation rows
  std::vector<float> requantized_;  // scratch: kQ8's activation rows as floats, for other packings
};

}  // namespace kvshrink::kernels::cpu
