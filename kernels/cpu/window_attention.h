// Observation-window attention for scoring presses (SnapKV family, TOVA, head profiling): how much
// attention a few recent queries give each cached token, without the full attention matrix.
#pragma once

#include <cstdint>
#include <span>

namespace kvshrink::kernels::cpu {

// A run of cached tokens: keys [n x head_dim] (RoPE applied), positions [n] ascending.
struct KeyBlock {
  const float* keys;
  const int32_t* positions;
  int64_t n;
};

// out[t] for every token t of the blocks (concatenated in order) =
//   mean over window queries i and group heads j of softmax_t(scale * q_ij . k_t), causal by position
//   (query i sees token t iff position_t <= q_positions[i]).
// Query head j of window query i is at q + i*q_stride + j*head_dim.
void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t window,
                           int64_t group, int64_t head_dim, float scale, std::span<const KeyBlock> blocks,
                           float* out);

}  // namespace kvshrink::kernels::cpu
