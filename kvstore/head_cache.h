// Everything one (sequence, layer, kv-head) holds: its tokens in segments. Attention runs over each
// non-empty segment and merges them with the online-softmax rule, so tokens sit in several
// representations: full-dimension segments (the last one is the tail that new tokens are appended
// to) and low-rank segments (rank buckets of coefficients in the head's basis, made by
// dimension-level compression). Token index i means the i-th full-dimension token across the
// full-dimension segments in order (positions ascend across them); presses score and eviction plans
// index only those. Low-rank tokens are final: later compactions leave them as they are.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvstore/head_segment.h"
#include "kvstore/low_rank_segment.h"

namespace kvshrink::kvstore {

class HeadCache {
 public:
  // Full-dimension tokens (and the low-rank blocks compression adds) hold `dtype` elements.
  HeadCache(int64_t head_dim, kernels::KvDtype dtype, bool track_mass, KvMemoryPool& pool);
  HeadCache(HeadCache&&) = default;
  HeadCache& operator=(HeadCache&&) = default;

  std::span<const HeadSegment> segments() const { return segments_; }
  std::span<HeadSegment> segments() { return segments_; }
  HeadSegment& tail() { return segments_.back(); }
  std::span<const LowRankSegment> low_rank() const { return low_rank_; }
  void add_low_rank(LowRankSegment segment);
  // Full-dimension tokens (what token indices count).
  int64_t tokens() const;
  int64_t low_rank_tokens() const;
  int64_t head_dim() const { return head_dim_; }
  kernels::KvDtype dtype() const { return dtype_; }
  KvMemoryPool& pool() const { return *pool_; }
  uint64_t bytes_held() const;
  // Bytes of the pool blocks held (low-rank blocks shared by several heads count their share).
  uint64_t block_bytes_held() const;
  // Positions of the full-dimension tokens in index order.
  std::vector<int32_t> positions() const;

  // Keeps only the full-dimension tokens at `kept` (ascending token indices), in place: they end
  // in one compacted segment followed by an empty tail, and the blocks of the others go back to
  // the pool. Low-rank segments stay.
  void compact(std::span<const int32_t> kept);
  // This head with only the tokens at `kept`, same layout as after compact(); the copy tracks
  // attention mass if asked (copied tokens keep theirs, or start at 0 where this head had none).
  // Its full-dimension tokens in blocks of `pool` (low-rank blocks are shared, never written).
  HeadCache compacted_copy(std::span<const int32_t> kept, bool track_mass, KvMemoryPool& pool) const;
  HeadCache compacted_copy(std::span<const int32_t> kept, bool track_mass) const {
    return compacted_copy(kept, track_mass, *pool_);
  }
  HeadCache compacted_copy(std::span<const int32_t> kept) const { return compacted_copy(kept, track_mass_); }
  void clear();

 private:
  void check_kept(std::span<const int32_t> kept) const;
  HeadSegment gather(std::span<const int32_t> kept, bool track_mass, KvMemoryPool& pool) const;

  int64_t head_dim_;
  kernels::KvDtype dtype_;
  bool track_mass_;
  KvMemoryPool* pool_;
  std::vector<HeadSegment> segments_;  // never empty; back() is the tail
  std::vector<LowRankSegment> low_rank_;
};

}  // namespace kvshrink::kvstore
