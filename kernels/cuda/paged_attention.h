// Attention over a head's paged KV blocks on the device: Backend::attention (kernels/backend.h),
// the same semantics (causal by position, lse, out == null for the mass alone, H2O's mass), for a
// batch whose every array is device memory.
//
// Device-memory contract: the HeadAttention array `calls`, the KvBlockView arrays its calls point
// to, and every pointer in them (q, out, lse, q_positions, lse_reference, each block's keys, values,
// positions and mass) are device memory; the caller has copied the structs there. The host reads
// none of it, so it passes `shape`: bounds on every call's fields, for the launch shapes and the
// scratch. Calls may differ in head_dim, group, m and tokens within those bounds. The bounds must
// hold (a call beyond max_head_dim, max_group or max_m is skipped, left unwritten; one beyond
// max_tokens loses its later tokens in decode and in the mass). Within a call, positions ascend
// across blocks (as the kvstore keeps them), and a track_mass call's blocks have mass. Keys and
// values are f16 or f32 as each block's dtype says, read as f32 (kernels/cuda/kv_elements.cuh).
//
// Kernels, one stream, no host synchronisation (scratch from cudaMallocAsync, freed in order):
//   prefill (m > 1): one thread block per (call, tile of 32 queries, query head): the call's keys
//     and values stream through shared memory in tiles of 16 tokens, online softmax, f32;
//   decode (m == 1), flash-decoding: one thread block per (call, token chunk, query head) writes a
//     partial (max, sum, weighted value sum); a second kernel per (call, head) combines the chunks
//     into out and lse;
//   mass (shape.track_mass): one thread block per (call, 32 tokens, 32 query rows) recomputes the
//     probabilities against the final log-denominators and atomicAdds them to the blocks' mass.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"

namespace kvshrink::kernels::cuda {

inline constexpr int64_t kAttentionMaxHeadDim = 128;

// Bounds on every call of a batch, which the host knows from building it.
struct AttentionBatchShape {
  int64_t max_head_dim = 0;  // 1..kAttentionMaxHeadDim
  int64_t max_group = 0;     // query heads per call
  int64_t max_m = 0;         // query tokens per call
  int64_t max_tokens = 0;    // cached tokens per call (the sum of its blocks' n)
  bool track_mass = false;   // some call has track_mass
};

// Every call of the batch, as Backend::attention. Throws std::invalid_argument for a shape the
// kernels do not take (head_dim beyond kAttentionMaxHeadDim, a grid beyond CUDA's limits) before
// touching the device, std::runtime_error when a launch fails.
void attention(const HeadAttention* calls, int64_t n_calls, const AttentionBatchShape& shape,
               cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
