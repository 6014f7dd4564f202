#include "kvstore/kv_store.h"

#include <cstddef>

namespace kvshrink::kvstore {

KvStore::KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim)
    : n_layers_(n_layers), owned_kv_heads_(owned_kv_heads) {
  heads_.assign(static_cast<size_t>(n_layers * owned_kv_heads), HeadSegment(head_dim));
}

void KvStore::reserve(int64_t tokens) {
  for (auto& head : heads_) head.reserve(tokens);
}

void KvStore::clear() {
  for (auto& head : heads_) head.clear();
  next_position_ = 0;
}

uint64_t KvStore::bytes_held() const {
  uint64_t total = 0;
  for (const auto& head : heads_) total += head.bytes_held();
  return total;
}

uint64_t KvStore::full_bytes() const {
  return heads_.empty()
             ? 0
             : heads_.size() * heads_.front().bytes_per_token() * static_cast<uint64_t>(next_position_);
}

}  // namespace kvshrink::kvstore
