// How many KV blocks a sequence needs on each rank: every rank holds n_layers x (its kv heads)
// head caches, each appending into blocks of kBlockTokens tokens. All heads of a sequence hold the
// same number of tail tokens (decode and prefill append to every head; compression starts a new,
// empty tail in every head), so the coordinator can tell each rank's need from the tail length.
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::engine {

struct KvGeometry {
  int64_t n_layers = 0;
  std::vector<int64_t> kv_heads;  // [tp]: kv heads each rank owns
  int64_t block_tokens = 16;
  int64_t capacity_blocks = 0;  // per rank

  int tp() const { return static_cast<int>(kv_heads.size()); }
  // Blocks rank r allocates when `added` tokens are appended to tails that hold `tail` tokens.
  int64_t blocks_for(int rank, int64_t tail, int64_t added) const {
    const auto blocks = [&](int64_t tokens) { return (tokens + block_tokens - 1) / block_tokens; };
    return n_layers * kv_heads[static_cast<size_t>(rank)] * (blocks(tail + added) - blocks(tail));
  }
};

}  // namespace kvshrink::engine
