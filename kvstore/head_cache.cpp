#include "kvstore/head_cache.h"

#include <fmt/format.h>

#include <stdexcept>

namespace kvshrink::kvstore {

HeadCache::HeadCache(int64_t head_dim, bool track_mass) : head_dim_(head_dim), track_mass_(track_mass) {
  segments_.emplace_back(head_dim, track_mass);
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
  if (!segment.basis || !segment.block || segment.basis->head_dim != head_dim_ ||
      segment.rank() < 1 || segment.rank() > segment.basis->latent_dim ||
      segment.block->key_coefficients.size() != static_cast<size_t>(segment.tokens() * segment.rank()) ||
      segment.block->value_coefficients.size() != static_cast<size_t>(segment.tokens() * segment.rank())) {
    throw std::invalid_argument("low-rank segment does not fit the head (basis, rank or coefficient count)");
  }
  if (segment.tokens() > 0) low_rank_.push_back(std::move(segment));
}

uint64_t HeadCache::bytes_held() const {
  uint64_t total = 0;
  for (const auto& segment : segments_) total += segment.bytes_held();
  for (const auto& segment : low_rank_) total += segment.bytes_held();
  return total;
}

std::vector<int32_t> HeadCache::positions() const {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(tokens()));
  for (const auto& segment : segments_) {
    out.insert(out.end(), segment.positions(), segment.positions() + segment.tokens());
  }
  return out;
}

HeadSegment HeadCache::gather(std::span<const int32_t> kept) const {
  HeadSegment out(head_dim_, track_mass_);
  out.reserve(static_cast<int64_t>(kept.size()));
  size_t segment = 0;
  int64_t segment_begin = 0;  // token index of segments_[segment]'s first token
  int64_t previous = -1;
  for (const int32_t index : kept) {
    if (index <= previous || index >= tokens()) {
      throw std::invalid_argument(
          fmt::format("compaction: token index {} out of order or outside [0, {})", index, tokens()));
    }
    previous = index;
    while (index >= segment_begin + segments_[segment].tokens())
      segment_begin += segments_[segment++].tokens();
    out.append_from(segments_[segment], index - segment_begin);
  }
  return out;
}

void HeadCache::compact(std::span<const int32_t> kept) {
  HeadSegment compacted = gather(kept);
  segments_.clear();
  segments_.push_back(std::move(compacted));
  segments_.emplace_back(head_dim_, track_mass_);
}

HeadCache HeadCache::compacted_copy(std::span<const int32_t> kept) const {
  HeadCache copy(head_dim_, track_mass_);
  copy.segments_.insert(copy.segments_.begin(), gather(kept));
  copy.low_rank_ = low_rank_;  // blocks are immutable: the copy shares them
  return copy;
}

void HeadCache::clear() {
  low_rank_.clear();
  segments_.clear();
  segments_.emplace_back(head_dim_, track_mass_);
}

}  // namespace kvshrink::kvstore
