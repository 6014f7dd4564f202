// The KV cache of one sequence on one rank: a HeadCache per (layer, owned kv head), the recent
// queries of each layer (for window-scoring presses) and, when asked, their running statistics. Its tokens
// live in blocks of the rank's KV pool (shared by every store of the rank; a store made without one gets its
// own, unlimited).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kvstore/head_cache.h"
#include "kvstore/kv_memory_pool.h"
#include "kvstore/query_statistics.h"
#include "kvstore/recent_queries.h"

namespace kvshrink::kvstore {

struct KvStoreOptions {
  int64_t query_window = 0;           // recent queries kept per layer (0: none)
  bool track_attention_mass = false;  // accumulate each token's received attention (H2O)
  bool attention_mass_max = false;    // ... as the largest probability it got instead (KVzip's probe)
  // Per layer, running statistics of the queries before RoPE at positions >= this (Expected
  // Attention); -1: none kept.
  int64_t query_statistics_from = -1;
  bool keep_token_ids = false;  // the ids of every token appended (KVzip re-reads the context)
};

// Options that serve stores needing a and stores needing b (the larger window, mass if either,
// query statistics from the earlier position if either keeps them).
inline KvStoreOptions covering(const KvStoreOptions& a, const KvStoreOptions& b) {
  const int64_t from = a.query_statistics_from < 0                         ? b.query_statistics_from
                       : b.query_statistics_from < 0                       ? a.query_statistics_from
                       : a.query_statistics_from < b.query_statistics_from ? a.query_statistics_from
                                                                           : b.query_statistics_from;
  return {.query_window = a.query_window > b.query_window ? a.query_window : b.query_window,
          .track_attention_mass = a.track_attention_mass || b.track_attention_mass,
          .query_statistics_from = from,
          .keep_token_ids = a.keep_token_ids || b.keep_token_ids};
}

// Token indices kept per (layer, local head): kept[layer * owned_kv_heads + head], ascending.
using LocalKeepPlan = std::vector<std::vector<int32_t>>;

class KvStore {
 public:
  // K/V (and low-rank coefficients) held as `dtype` elements; a pool must have blocks of
  // HeadSegment::block_bytes(head_dim, dtype).
  KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim, int64_t owned_q_heads,
          const KvStoreOptions& options = {}, std::shared_ptr<KvMemoryPool> pool = nullptr,
          kernels::KvDtype dtype = kernels::KvDtype::kF16);
  KvStore(KvStore&& other) noexcept = default;
  KvStore& operator=(KvStore&&) = delete;
  KvStore(const KvStore&) = delete;

  HeadCache& head(int64_t layer, int64_t local_head) { return heads_[layer * owned_kv_heads_ + local_head]; }
  const HeadCache& head(int64_t layer, int64_t local_head) const {
    return heads_[layer * owned_kv_heads_ + local_head];
  }
  RecentQueries& recent_queries(int64_t layer) { return queries_[layer]; }
  const RecentQueries& recent_queries(int64_t layer) const { return queries_[layer]; }
  // Untracked (tracked() false) unless options().query_statistics_from >= 0.
  QueryStatistics& query_statistics(int64_t layer) { return statistics_[layer]; }
  const QueryStatistics& query_statistics(int64_t layer) const { return statistics_[layer]; }
  const KvStoreOptions& options() const { return options_; }
  // The ids of the tokens at positions 0..next_position()-1 when options().keep_token_ids, else
  // empty; LlamaModel::forward_step appends them.
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  void record_token_ids(std::span<const int32_t> ids) {
    if (options_.keep_token_ids) token_ids_.insert(token_ids_.end(), ids.begin(), ids.end());
  }

  int64_t n_layers() const { return n_layers_; }
  int64_t owned_kv_heads() const { return owned_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  kernels::KvDtype dtype() const { return dtype_; }
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
  // What this store would hold for every position so far at full dimension in 16-bit elements,
  // whatever its own dtype (the denominator of every "share of full KV" figure, as peers count it).
  uint64_t full_bytes() const;

  // Copies keep this store's dtype.
  // Keeps only the planned tokens in every head and frees the rest.
  void compact(const LocalKeepPlan& plan);
  // A new store for the same sequence holding only the planned tokens (this one is unchanged);
  // recent queries come along, so the copy can be compressed again later. It records what
  // `options` asks from now on (a press that needs less than this store: no attention mass).
  KvStore compacted_copy(const LocalKeepPlan& plan, const KvStoreOptions& options) const;
  KvStore compacted_copy(const LocalKeepPlan& plan) const { return compacted_copy(plan, options_); }
  KvStore compacted_copy_into(const LocalKeepPlan& plan, const KvStoreOptions& options,
                              std::shared_ptr<KvMemoryPool> pool) const;
  // A copy holding every token (the same layout as compacted_copy).
  KvStore copy(const KvStoreOptions& options) const;
  KvStore copy() const { return copy(options_); }
  // A copy holding every token in blocks of `pool` (e.g. a pool of its own, for scratch work that
  // must not take the shared pool's blocks).
  KvStore copy_into(const KvStoreOptions& options, std::shared_ptr<KvMemoryPool> pool) const;

 private:
  int64_t n_layers_;
  int64_t owned_kv_heads_;
  int64_t head_dim_;
  kernels::KvDtype dtype_;
  KvStoreOptions options_;
  int64_t next_position_ = 0;
  std::shared_ptr<KvMemoryPool> pool_;       // before heads_: destroyed after them, so blocks go back to it
  std::vector<HeadCache> heads_;             // [n_layers x owned_kv_heads]
  std::vector<RecentQueries> queries_;       // [n_layers]
  std::vector<QueryStatistics> statistics_;  // [n_layers]
  std::vector<int32_t> token_ids_;           // [next_position_] when options_.keep_token_ids
};

}  // namespace kvshrink::kvstore
