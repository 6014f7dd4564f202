// How the tensor-parallel ranks divide a model: the one place that decides who owns what.
// A rank owns whole KV heads and the query heads that read them; heads, FFN columns and vocab rows
// are split into contiguous ranges, the first (n % size) ranks taking one more (3 kv heads on
// 2 ranks = 2 + 1).
#pragma once

#include <cstdint>

#include "engine/model/llama_config.h"

namespace kvshrink::engine {

struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Part `index` of [0, n) divided into `parts` contiguous ranges.
IndexRange split_range(int64_t n, int parts, int index);

struct ShardLayout {
  IndexRange kv_heads;  // owned kv heads
  IndexRange q_heads;   // query heads reading them (kv_heads * group)
  IndexRange ffn;       // columns of gate/up output = rows of down input
  IndexRange vocab;     // rows of the output projection
};

// Throws std::invalid_argument if tp_size exceeds the number of kv heads.
ShardLayout shard_layout(const LlamaConfig& config, int tp_size, int rank);

}  // namespace kvshrink::engine
