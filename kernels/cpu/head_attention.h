// The attention kernels behind CpuBackend::attention and CpuBackend::low_rank_attention, one call
// at a time, and the scratch they work in. Each thread has its own scratch, so the calls of one
// batch can run concurrently on the compute threads (cpu_backend.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace kvshrink::kernels::cpu {

struct AttentionScratch {
  std::vector<float> scores;    // [query block x n_kv] attention probabilities (decode: [group x n_kv])
  std::vector<float> inv_sums;  // decode: [group] 1 / softmax denominators
  // prefill: the blocks' tokens gathered contiguously, keys and values [n_kv x head_dim],
  // positions [n_kv], accumulated attention [n_kv]
  std::vector<float> keys, values, mass;
  std::vector<int32_t> positions;
  // low rank: queries [m*group x d], projected queries, then value sums [m*group x max rank],
  // rebuilt keys [bucket tokens x d], outputs [m*group x d], positions of every bucket's tokens
  std::vector<float> lr_queries, lr_latent, lr_keys, lr_out;
  std::vector<int32_t> lr_positions;
  // low rank over f16 buckets: their coefficients widened to f32, and the buckets pointing there
  std::vector<float> lr_coefficients;
  std::vector<LowRankBucket> lr_buckets;
};

// The calling thread's scratch.
AttentionScratch& thread_attention_scratch();

// Prefill queries go through the kernel in blocks of this many tokens.
inline constexpr int64_t kPrefillQueryBlock = 128;

// paged_attention.cpp. One query token reads the blocks in place (no OpenBLAS); more gather them
// and multiply with OpenBLAS SGEMM.
void head_attention(const HeadAttention& args, AttentionScratch& scratch);
// low_rank_attention.cpp. Decode over post-RoPE keys uses plain loops; prefill and pre-RoPE keys
// use OpenBLAS SGEMM.
void low_rank_head_attention(const LowRankAttention& args, AttentionScratch& scratch);

}  // namespace kvshrink::kernels::cpu
