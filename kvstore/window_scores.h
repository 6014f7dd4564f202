// Shared steps of the observation-window presses (kv-methods.md §1.1).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

// The head's full-dimension blocks, in token order.
std::vector<kernels::KvBlockView> key_blocks(const HeadCache& head);

// scores[t] = mean over the last `window` recent queries (fewer if fewer are held) and the group's
// query heads of their attention to token t of the head.
void mean_window_attention(const HeadScoringInput& input, int64_t window, std::span<float> scores);

// In place: 1-D pooling with stride 1 and padding kernel/2, so the length is unchanged; average
// pooling divides by the kernel size at the edges too (PyTorch's count_include_pad).
void pool_scores(std::span<float> scores, int64_t kernel, PoolType type);

// The last min(window, size) scores become kAlwaysKeep.
void protect_recent(std::span<float> scores, int64_t window);

}  // namespace kvshrink::kvstore
