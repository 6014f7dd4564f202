#include "engine/model/tensor_parallel_split.h"

#include <fmt/format.h>

#include <stdexcept>

namespace kvshrink::engine {

IndexRange split_range(int64_t n, int parts, int index) {
  const int64_t base = n / parts;
  const int64_t extra = n % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

ShardLayout shard_layout(const LlamaConfig& config, int tp_size, int rank) {
  if (tp_size < 1 || tp_size > config.n_head_kv) {
    throw std::invalid_argument(
        fmt::format("{} ranks cannot split {} kv heads: a rank owns whole kv heads, so use at most {} ranks",
                    tp_size, config.n_head_kv, config.n_head_kv));
  }
  ShardLayout layout;
  layout.kv_heads = split_range(config.n_head_kv, tp_size, rank);
  layout.q_heads = {layout.kv_heads.begin * config.group_size(), layout.kv_heads.end * config.group_size()};
  layout.ffn = split_range(config.n_ff, tp_size, rank);
  layout.vocab = split_range(config.vocab_size, tp_size, rank);
  return layout;
}

}  // namespace kvshrink::engine
