#include "kvstore/kv_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <stdexcept>

namespace kvshrink::kvstore {

namespace {
std::shared_ptr<KvMemoryPool> pool_or_own(std::shared_ptr<KvMemoryPool> pool, int64_t head_dim,
                                          kernels::KvDtype dtype) {
  return pool ? std::move(pool)
              : std::make_shared<KvMemoryPool>(0, HeadSegment::block_bytes(head_dim, dtype));
}
}  // namespace

KvStore::KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim, int64_t owned_q_heads,
                 const KvStoreOptions& options, std::shared_ptr<KvMemoryPool> pool, kernels::KvDtype dtype)
    : n_layers_(n_layers),
      owned_kv_heads_(owned_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      options_(options),
      pool_(pool_or_own(std::move(pool), head_dim, dtype)) {
  heads_.reserve(static_cast<size_t>(n_layers * owned_kv_heads));
  for (int64_t i = 0; i < n_layers * owned_kv_heads; ++i)
    heads_.emplace_back(head_dim, dtype, options.track_attention_mass, *pool_);
  queries_.assign(static_cast<size_t>(n_layers),
                  RecentQueries(options.query_window, owned_q_heads * head_dim));
  statistics_.assign(static_cast<size_t>(n_layers),
                     options.query_statistics_from < 0
                         ? QueryStatistics()
                         : QueryStatistics(owned_q_heads, head_dim, options.query_statistics_from));
}

void KvStore::clear() {
  for (auto& head : heads_) head.clear();
  for (auto& statistics : statistics_) {
    if (statistics.tracked()) {
      statistics = QueryStatistics(statistics.q_heads(), head_dim_, options_.query_statistics_from);
    }
  }
  token_ids_.clear();
  next_position_ = 0;
}

int64_t KvStore::max_head_tokens() const {
  int64_t most = 0;
  for (const auto& head : heads_) most = std::max(most, head.tokens());
  return most;
}

uint64_t KvStore::bytes_held() const {
  uint64_t total = 0;
  for (const auto& head : heads_) total += head.bytes_held();
  return total;
}

uint64_t KvStore::block_bytes_held() const {
  uint64_t total = 0;
  for (const auto& head : heads_) total += head.block_bytes_held();
  return total;
}

uint64_t KvStore::full_bytes() const {
  const uint64_t per_token = HeadSegment::bytes_per_token(head_dim_, kernels::KvDtype::kF16);
  return heads_.size() * per_token * static_cast<uint64_t>(next_position_);
}

namespace {
void check_plan_shape(const LocalKeepPlan& plan, size_t heads) {
  if (plan.size() != heads) {
    throw std::invalid_argument(fmt::format("keep plan has {} heads, the store {}", plan.size(), heads));
  }
}
}  // namespace

void KvStore::compact(const LocalKeepPlan& plan) {
  check_plan_shape(plan, heads_.size());
  for (size_t i = 0; i < heads_.size(); ++i) heads_[i].compact(plan[i]);
}

KvStore KvStore::compacted_copy(const LocalKeepPlan& plan, const KvStoreOptions& options) const {
  return compacted_copy_into(plan, options, pool_);
}

KvStore KvStore::compacted_copy_into(const LocalKeepPlan& plan, const KvStoreOptions& options,
                                     std::shared_ptr<KvMemoryPool> pool) const {
  check_plan_shape(plan, heads_.size());
  KvStore copy(n_layers_, owned_kv_heads_, head_dim_, 0, options, std::move(pool), dtype_);
  for (size_t i = 0; i < heads_.size(); ++i)
    copy.heads_[i] = heads_[i].compacted_copy(plan[i], options.track_attention_mass, *copy.pool_);
  copy.queries_ = queries_;
  if (options.query_statistics_from >= 0) copy.statistics_ = statistics_;
  if (options.keep_token_ids) copy.token_ids_ = token_ids_;
  copy.next_position_ = next_position_;
  return copy;
}

KvStore KvStore::copy(const KvStoreOptions& options) const {
  return copy_into(options, pool_);
}

KvStore KvStore::copy_into(const KvStoreOptions& options, std::shared_ptr<KvMemoryPool> pool) const {
  LocalKeepPlan all(heads_.size());
  for (size_t i = 0; i < heads_.size(); ++i) {
    all[i].resize(static_cast<size_t>(heads_[i].tokens()));
    std::iota(all[i].begin(), all[i].end(), 0);
  }
  return compacted_copy_into(all, options, std::move(pool));
}

}  // namespace kvshrink::kvstore
