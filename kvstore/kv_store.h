// The KV cache of one sequence on one rank: a HeadCache per (layer, owned kv head), the recent
// queries of each layer (for window-scoring presses). Its tokens live in blocks of the rank's KV
// pool (shared by every store of the rank; a store made without one gets its own, unlimited).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kvstore/head_cache.h"
#include "kvstore/kv_memory_pool.h"
#include "kvstore/recent_queries.h"

namespace kvshrink::kvstore {

struct KvStoreOptions {
  int64_t query_window = 0;           // recent queries kept per layer (0: none)
  bool track_attention_mass = false;  // accumulate each token's received attention (H2O)
};

// Options that serve stores needing a and stores needing b (the larger window, mass if either).
inline KvStoreOptions covering(const KvStoreOptions& a, const KvStoreOptions& b) {
  return {.query_window = a.query_window > b.query_window ? a.query_window : b.query_window,
          .track_attention_mass = a.track_attention_mass || b.track_attention_mass};
}

// Token indices kept per (layer, local head): kept[layer * owned_kv_heads + head], ascending.
using LocalKeepPlan = std::vector<std::vector<int32_t>>;

class KvStore {
 public:
  KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim, int64_t owned_q_heads,
          const KvStoreOptions& options = {}, std::shared_ptr<KvMemoryPool> pool = nullptr);
  KvStore(KvStore&& other) noexcept = default;
  KvStore& operator=(KvStore&&) = delete;
  KvStore(const KvStore&) = delete;

  HeadCache& head(int64_t layer, int64_t local_head) { return heads_[layer * owned_kv_heads_ + local_head]; }
  const HeadCache& head(int64_t layer, int64_t local_head) const {
    return heads_[layer * owned_kv_heads_ + local_head];
  }
  RecentQueries& recent_queries(int64_t layer) { return queries_[layer]; }
  const RecentQueries& recent_queries(int64_t layer) const { return queries_[layer]; }
  const KvStoreOptions& options() const { return options_; }

  int64_t n_layers() const { return n_layers_; }
  int64_t owned_kv_heads() const { return owned_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  // Positions appended so far (the next token goes at this position).
  int64_t next_position() const { return next_position_; }
  void advance(int64_t tokens) { next_position_ += tokens; }

  void clear();
  // Most tokens any head holds.
  int64_t max_head_tokens() const;
  uint64_t bytes_held() const;
  // Bytes of the pool blocks this store holds (>= bytes_held(): blocks fill token by token).
  uint64_t block_bytes_held() const;
  KvMemoryPool& pool() const { return *pool_; }
  // What this store would hold for every position so far at full dimension (the denominator of
  // every "share of full KV" figure).
  uint64_t full_bytes() const;

  // Keeps only the planned tokens in every head and frees the rest.
  void compact(const LocalKeepPlan& plan);
  // A new store for the same sequence holding only the planned tokens (this one is unchanged);
  // recent queries come along, so the copy can be compressed again later. It records what
  // `options` asks from now on (a press that needs less than this store: no attention mass).
  KvStore compacted_copy(const LocalKeepPlan& plan, const KvStoreOptions& options) const;
  KvStore compacted_copy(const LocalKeepPlan& plan) const { return compacted_copy(plan, options_); }
  // A copy holding every token (the same layout as compacted_copy).
  KvStore copy(const KvStoreOptions& options) const;
  KvStore copy() const { return copy(options_); }

 private:
  int64_t n_layers_;
  int64_t owned_kv_heads_;
  int64_t head_dim_;
  KvStoreOptions options_;
  int64_t next_position_ = 0;
  std::shared_ptr<KvMemoryPool> pool_;  // before heads_: destroyed after them, so blocks go back to it
  std::vector<HeadCache> heads_;        // [n_layers x owned_kv_heads]
  std::vector<RecentQueries> queries_;  // [n_layers]
};

}  // namespace kvshrink::kvstore
