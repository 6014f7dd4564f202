// Attention over a head's rank buckets on the device: Backend::low_rank_attention
// (kernels/backend.h LowRankAttention), the same semantics, for a batch whose every array is
// device memory.
//
// Device-memory contract: the LowRankAttention array `calls`, the LowRankBucket arrays its calls
// point to, and every pointer in them (q, out, lse, q_positions, key_basis, value_basis, each
// bucket's coefficients and positions) are device memory; the caller has copied the structs there.
// The host reads none of it and passes `shape`, bounds on every call's fields (a call beyond them,
// or with a bucket rank above its head_dim, is skipped, left unwritten: a caller bug). Coefficients
// are f16 or f32 as each bucket's dtype says, read as f32 (kernels/cuda/kv_elements.cuh).
//
// One thread block of 4 warps per (call, query token, query head); a warp takes every 4th token of
// the buckets, with an online softmax over the scores (post-RoPE keys: q_z[:r] . z_k, q_z = U_k q
// projected once per block; pre-RoPE keys: q . RoPE(U_k[:r]^T z_k, position), theta and its sine and
// cosine in double as kernels/cpu/rope.cpp) and the value coefficients summed in the basis; the warps
// merge, and the block projects the sum back once, out = U_v[:r_max]^T a_z.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/paged_attention.h"  // kAttentionMaxHeadDim

namespace kvshrink::kernels::cuda {

// Bounds on every call of a batch, which the host knows from building it.
struct LowRankBatchShape {
  int64_t max_head_dim = 0;  // 1..kAttentionMaxHeadDim
  int64_t max_group = 0;     // query heads per call
  int64_t max_m = 0;         // query tokens per call
};

// Every call of the batch, as Backend::low_rank_attention. Throws std::invalid_argument for a shape
// the kernel does not take (head_dim beyond kAttentionMaxHeadDim, a grid beyond CUDA's limits)
// before touching the device, std::runtime_error when the launch fails.
void low_rank_attention(const LowRankAttention* calls, int64_t n_calls, const LowRankBatchShape& shape,
                        cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
