// Everything one (sequence, layer, kv-head) holds: its tokens in segments. Attention runs over each
// non-empty segment and merges them with the online-softmax rule, so tokens can sit in several
// representations (today: full-dimension segments; low-rank buckets later). The last segment is
// the tail that new tokens are appended to. Token index i means the i-th token across the
// segments in order (positions ascend across segments too).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvstore/head_segment.h"

namespace kvshrink::kvstore {

class HeadCache {
 public:
  HeadCache(int64_t head_dim, bool track_mass);

  std::span<const HeadSegment> segments() const { return segments_; }
  std::span<HeadSegment> segments() { return segments_; }
  HeadSegment& tail() { return segments_.back(); }
  int64_t tokens() const;
  int64_t head_dim() const { return head_dim_; }
  uint64_t bytes_held() const;
  // Positions of every token in index order.
  std::vector<int32_t> positions() const;

  // Keeps only the tokens at `kept` (ascending token indices): they move into one compacted segment
  // followed by an empty tail, and the memory of the others is freed.
  void compact(std::span<const int32_t> kept);
  // This head with only the tokens at `kept`, same layout as after compact().
  HeadCache compacted_copy(std::span<const int32_t> kept) const;
  void reserve_tail(int64_t tokens) { segments_.back().reserve(tokens); }
  void clear();

 private:
  HeadSegment gather(std::span<const int32_t> kept) const;

  int64_t head_dim_;
  bool track_mass_;
  std::vector<HeadSegment> segments_;  // never empty; back() is the tail
};

}  // namespace kvshrink::kvstore
