#include "kvstore/kv_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <stdexcept>

namespace kvshrink::kvstore {

KvStore::KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim, int64_t owned_q_heads,
                 const KvStoreOptions& options, std::shared_ptr<KvMemoryPool> pool)
    : n_layers_(n_layers),
      owned_kv_heads_(owned_kv_heads),
      head_dim_(head_dim),
      options_(options),
      pool_(std::move(pool)) {
  heads_.assign(static_cast<size_t>(n_layers * owned_kv_heads),
                HeadCache(head_dim, options.track_attention_mass));
  queries_.assign(static_cast<size_t>(n_layers),
                  RecentQueries(options.query_window, owned_q_heads * head_dim));
}

KvStore::~KvStore() {
  if (pool_) pool_->release(charged_);
}

KvStore::KvStore(KvStore&& other) noexcept
    : n_layers_(other.n_layers_),
      owned_kv_heads_(other.owned_kv_heads_),
      head_dim_(other.head_dim_),
      options_(other.options_),
      next_position_(other.next_position_),
      heads_(std::move(other.heads_)),
      queries_(std::move(other.queries_)),
      pool_(std::move(other.pool_)),
      charged_(other.charged_) {
  other.charged_ = 0;
}

void KvStore::reserve(int64_t tokens) {
  for (auto& head : heads_) head.reserve_tail(tokens - head.tokens());
}

void KvStore::clear() {
  for (auto& head : heads_) head.clear();
  next_position_ = 0;
  account();
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

uint64_t KvStore::full_bytes() const {
  const uint64_t per_token = 2 * head_dim_ * sizeof(float) + sizeof(int32_t);
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
  account();
}

KvStore KvStore::compacted_copy(const LocalKeepPlan& plan) const {
  check_plan_shape(plan, heads_.size());
  KvStore copy(n_layers_, owned_kv_heads_, head_dim_, 0, options_, pool_);
  for (size_t i = 0; i < heads_.size(); ++i) copy.heads_[i] = heads_[i].compacted_copy(plan[i]);
  copy.queries_ = queries_;
  copy.next_position_ = next_position_;
  copy.account();
  return copy;
}

KvStore KvStore::copy() const {
  LocalKeepPlan all(heads_.size());
  for (size_t i = 0; i < heads_.size(); ++i) {
    all[i].resize(static_cast<size_t>(heads_[i].tokens()));
    std::iota(all[i].begin(), all[i].end(), 0);
  }
  return compacted_copy(all);
}

void KvStore::account() {
  if (!pool_) return;
  const uint64_t held = bytes_held();
  if (held > charged_) {
    pool_->charge(held - charged_);
  } else {
    pool_->release(charged_ - held);
  }
  charged_ = held;
}

}  // namespace kvshrink::kvstore
