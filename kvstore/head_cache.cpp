#include "kvstore/head_cache.h"

#include <fmt/format.h>

#include <stdexcept>

namespace kvshrink::kvstore {

HeadCache::HeadCache(int64_t head_dim, kernels::KvDtype dtype, bool track_mass, KvMemoryPool& pool)
    : head_dim_(head_dim), dtype_(dtype), track_mass_(track_mass), pool_(&pool) {
  segments_.emplace_back(head_dim, dtype, track_mass, pool);
}

int64_t HeadCache::tokens() const {
  int64_t total = 0;
  for (const auto& segment : segments_) total += segment.tokens();
  return total;
}

int64_t HeadCache::low_rank_tokens() const {
  int64_t total = 0;
  for (const auto& segment : low_rank_) total += segment.tokens();
  return total;
}

void HeadCache::add_low_rank(LowRankSegment segment) {
  if (!segment.basis || !segment.block || segment.basis->head_dim != head_dim_ || segment.rank() < 1 ||
      segment.rank() > segment.basis->latent_dim || segment.block->tokens_per_block() < 1) {
    throw std::invalid_argument("low-rank segment does not fit the head (basis or rank)");
  }
  if (segment.tokens() > 0) low_rank_.push_back(std::move(segment));
}

uint64_t HeadCache::bytes_held() const {
  uint64_t total = 0;
  for (const auto& segment : segments_) total += segment.bytes_held();
  for (const auto& segment : low_rank_) total += segment.bytes_held();
  return total;
}

uint64_t HeadCache::block_bytes_held() const {
  uint64_t total = 0;
  for (const auto& segment : segments_) total += segment.block_bytes_held();
  for (const auto& segment : low_rank_) total += segment.block->block_bytes_held() / segment.block->sharers();
  return total;
}

std::vector<int32_t> HeadCache::positions() const {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(tokens()));
  for (const auto& segment : segments_) {
    for (int64_t i = 0; i < segment.tokens(); ++i) out.push_back(segment.position(i));
  }
  return out;
}

void HeadCache::check_kept(std::span<const int32_t> kept) const {
  const int64_t n = tokens();
  int64_t previous = -1;
  for (const int32_t index : kept) {
    if (index <= previous || index >= n) {
      throw std::invalid_argument(
          fmt::format("compaction: token index {} out of order or outside [0, {})", index, n));
    }
    previous = index;
  }
}

HeadSegment HeadCache::gather(std::span<const int32_t> kept, bool track_mass, KvMemoryPool& pool) const {
  check_kept(kept);
  HeadSegment out(head_dim_, dtype_, track_mass, pool);
  size_t segment = 0;
  int64_t segment_begin = 0;  // token index of segments_[segment]'s first token
  for (const int32_t index : kept) {
    while (index >= segment_begin + segments_[segment].tokens())
      segment_begin += segments_[segment++].tokens();
    out.append_from(segments_[segment], index - segment_begin);
  }
  return out;
}

// In place, so compaction needs no memory beyond the later segments' kept tokens: each segment
// keeps its own tokens, then the later ones are appended to the first and freed.
void HeadCache::compact(std::span<const int32_t> kept) {
  check_kept(kept);
  size_t k = 0;
  int64_t begin = 0;  // token index of the segment's first token
  std::vector<int64_t> local;
  for (auto& segment : segments_) {
    const int64_t n = segment.tokens();
    local.clear();
    for (; k < kept.size() && kept[k] < begin + n; ++k) local.push_back(kept[k] - begin);
    segment.retain(local);
    begin += n;
  }
  HeadSegment& merged = segments_.front();
  for (size_t s = 1; s < segments_.size(); ++s) {
    for (int64_t i = 0; i < segments_[s].tokens(); ++i) merged.append_from(segments_[s], i);
    segments_[s].clear();
  }
  segments_.erase(segments_.begin() + 1, segments_.end());
  segments_.emplace_back(head_dim_, dtype_, track_mass_, *pool_);
}

HeadCache HeadCache::compacted_copy(std::span<const int32_t> kept, bool track_mass,
                                    KvMemoryPool& pool) const {
  HeadCache copy(head_dim_, dtype_, track_mass, pool);
  copy.segments_.insert(copy.segments_.begin(), gather(kept, track_mass, pool));
  copy.low_rank_ = low_rank_;  // blocks are immutable: the copy shares them
  return copy;
}

void HeadCache::clear() {
  low_rank_.clear();
  segments_.clear();
  segments_.emplace_back(head_dim_, dtype_, track_mass_, *pool_);
}

}  // namespace kvshrink::kvstore
