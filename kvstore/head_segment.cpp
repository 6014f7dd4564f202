#include "kvstore/head_segment.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace kvshrink::kvstore {

HeadSegment::HeadSegment(int64_t head_dim, bool track_mass, KvMemoryPool& pool)
    : head_dim_(head_dim), track_mass_(track_mass), pool_(&pool) {
  if (pool.block_bytes() != block_bytes(head_dim)) {
    throw std::invalid_argument(
        fmt::format("KV pool blocks of {} bytes do not fit head dimension {} ({} bytes)", pool.block_bytes(),
                    head_dim, block_bytes(head_dim)));
  }
}

void HeadSegment::append(const float* key, const float* value, int32_t position) {
  if (tokens_ > 0 && position <= this->position(tokens_ - 1)) {
    throw std::logic_error(
        fmt::format("HeadSegment: position {} after {}", position, this->position(tokens_ - 1)));
  }
  if (tokens_ == static_cast<int64_t>(blocks_.size()) * kBlockTokens) blocks_.push_back(pool_->allocate());
  const int64_t block = tokens_ / kBlockTokens;
  const int64_t slot = tokens_ % kBlockTokens;
  std::copy_n(key, head_dim_, keys_of(block) + slot * head_dim_);
  std::copy_n(value, head_dim_, values_of(block) + slot * head_dim_);
  positions_of(block)[slot] = position;
  mass_of(block)[slot] = 0.0f;
  ++tokens_;
}

void HeadSegment::append_from(const HeadSegment& from, int64_t index) {
  append(from.key(index), from.value(index), from.position(index));
  if (track_mass_ && from.track_mass_) mass(tokens_ - 1) = from.mass(index);
}

void HeadSegment::clear() {
  blocks_.clear();
  tokens_ = 0;
}

void HeadSegment::retain(std::span<const int64_t> indices) {
  for (size_t j = 0; j < indices.size(); ++j) {
    const auto from = indices[j];
    const auto to = static_cast<int64_t>(j);
    if (from == to) continue;
    const int64_t block = to / kBlockTokens;
    const int64_t slot = to % kBlockTokens;
    std::copy_n(key(from), head_dim_, keys_of(block) + slot * head_dim_);
    std::copy_n(value(from), head_dim_, values_of(block) + slot * head_dim_);
    positions_of(block)[slot] = position(from);
    mass(to) = mass(from);
  }
  tokens_ = static_cast<int64_t>(indices.size());
  blocks_.resize(static_cast<size_t>((tokens_ + kBlockTokens - 1) / kBlockTokens));
}

std::vector<float> HeadSegment::keys() const {
  std::vector<float> out(static_cast<size_t>(tokens_ * head_dim_));
  for (int64_t i = 0; i < tokens_; ++i) std::copy_n(key(i), head_dim_, out.data() + i * head_dim_);
  return out;
}

std::vector<float> HeadSegment::values() const {
  std::vector<float> out(static_cast<size_t>(tokens_ * head_dim_));
  for (int64_t i = 0; i < tokens_; ++i) std::copy_n(value(i), head_dim_, out.data() + i * head_dim_);
  return out;
}

std::vector<int32_t> HeadSegment::positions() const {
  std::vector<int32_t> out(static_cast<size_t>(tokens_));
  for (int64_t i = 0; i < tokens_; ++i) out[i] = position(i);
  return out;
}

void HeadSegment::block_views(std::vector<kernels::KvBlockView>& out) const {
  for (int64_t b = 0; b < static_cast<int64_t>(blocks_.size()); ++b) {
    const int64_t n = std::min(kBlockTokens, tokens_ - b * kBlockTokens);
    out.push_back({keys_of(b), values_of(b), positions_of(b), track_mass_ ? mass_of(b) : nullptr, n});
  }
}

}  // namespace kvshrink::kvstore
