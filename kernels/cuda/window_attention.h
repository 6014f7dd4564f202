// Observation-window attention for the scoring presses on the device: Backend::window_attention_mean
// (kernels/backend.h), the same semantics: out[t] for every token t of the blocks, in order, = mean
// over the n_queries queries and the group's heads of softmax_t(scale * q . k_t), causal by
// position (positions ascend across the blocks).
//
// Device-memory contract: q, q_positions, out and each block's keys and positions are device
// memory; the KvBlockView array `blocks` itself is host memory (as the Backend's span holds it),
// copied to the device here with the tile list. The blocks' values and mass are not read; keys are
// f16 or f32 as each block's dtype says, read as f32 (kernels/cuda/kv_elements.cuh).
//
// Two kernels, one stream, no host synchronisation (scratch from cudaMallocAsync, freed in order):
//   one thread block of 4 warps per (query, head): its log-denominator over the tokens it sees;
//   one thread block of 256 threads per tile of 32 tokens of one block: the tokens' keys in shared
//     memory, every (query, head) row 32 at a time, out[t] = sum of exp(score - lse) / rows.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/paged_attention.h"  // kAttentionMaxHeadDim

namespace kvshrink::kernels::cuda {

// Throws std::invalid_argument for a head_dim beyond kAttentionMaxHeadDim (or a negative count)
// before touching the device, std::runtime_error when a CUDA call fails.
void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t n_queries,
                           int64_t group, int64_t head_dim, float scale, const KvBlockView* blocks,
                           int64_t n_blocks, float* out, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
