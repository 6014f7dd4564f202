// The KV cache of one sequence on one rank: a HeadSegment per (layer, owned kv head).
#pragma once

#include <cstdint>
#include <vector>

#include "kvstore/head_segment.h"

namespace kvshrink::kvstore {

class KvStore {
 public:
  KvStore(int64_t n_layers, int64_t owned_kv_heads, int64_t head_dim);

  HeadSegment& head(int64_t layer, int64_t local_head) {
    return heads_[layer * owned_kv_heads_ + local_head];
  }
  const HeadSegment& head(int64_t layer, int64_t local_head) const {
    return heads_[layer * owned_kv_heads_ + local_head];
  }

  int64_t n_layers() const { return n_layers_; }
  int64_t owned_kv_heads() const { return owned_kv_heads_; }
  // Positions appended so far (the next token goes at this position).
  int64_t next_position() const { return next_position_; }
  void advance(int64_t tokens) { next_position_ += tokens; }

  void reserve(int64_t tokens);
  void clear();
  uint64_t bytes_held() const;
  // What this store would hold for every position so far at full dimension (the denominator of
  // every "share of full KV" figure).
  uint64_t full_bytes() const;

 private:
  int64_t n_layers_;
  int64_t owned_kv_heads_;
  int64_t next_position_ = 0;
  std::vector<HeadSegment> heads_;  // [n_layers x owned_kv_heads]
};

}  // namespace kvshrink::kvstore
