#include "kvstore/head_segment.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/kv_elements.h"

namespace kvshrink::kvstore {

HeadSegment::HeadSegment(int64_t head_dim, kernels::KvDtype dtype, bool track_mass, KvMemoryPool& pool)
    : head_dim_(head_dim), dtype_(dtype), track_mass_(track_mass), pool_(&pool) {
  if (pool.block_bytes() != block_bytes(head_dim, dtype)) {
    throw std::invalid_argument(fmt::format(
        "KV pool blocks of {} bytes do not fit head dimension {} at {} ({} bytes)", pool.block_bytes(),
        head_dim, kernels::kv_dtype_name(dtype), block_bytes(head_dim, dtype)));
  }
}

void HeadSegment::grow(int32_t position) {
  if (tokens_ > 0 && position <= this->position(tokens_ - 1)) {
    throw std::logic_error(
        fmt::format("HeadSegment: position {} after {}", position, this->position(tokens_ - 1)));
  }
  if (tokens_ == static_cast<int64_t>(blocks_.size()) * kBlockTokens) blocks_.push_back(pool_->allocate());
  positions_of(tokens_ / kBlockTokens)[tokens_ % kBlockTokens] = position;
  mass(tokens_) = 0.0f;
}

void HeadSegment::append(const float* key, const float* value, int32_t position) {
  grow(position);
  kernels::cpu::kv_from_f32(key, dtype_, key_at(tokens_), head_dim_);
  kernels::cpu::kv_from_f32(value, dtype_, value_at(tokens_), head_dim_);
  ++tokens_;
}

void HeadSegment::append_from(const HeadSegment& from, int64_t index) {
  if (from.dtype_ != dtype_) {
    std::vector<float> key(static_cast<size_t>(head_dim_)), value(key.size());
    from.read_key(index, key.data());
    from.read_value(index, value.data());
    append(key.data(), value.data(), from.position(index));
  } else {
    grow(from.position(index));
    std::memcpy(key_at(tokens_), from.key_at(index), static_cast<size_t>(row_bytes()));
    std::memcpy(value_at(tokens_), from.value_at(index), static_cast<size_t>(row_bytes()));
    ++tokens_;
  }
  if (track_mass_ && from.track_mass_) mass(tokens_ - 1) = from.mass(index);
}

void HeadSegment::read_key(int64_t i, float* out) const {
  kernels::cpu::kv_to_f32(key_at(i), dtype_, out, head_dim_);
}

void HeadSegment::read_value(int64_t i, float* out) const {
  kernels::cpu::kv_to_f32(value_at(i), dtype_, out, head_dim_);
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
    std::memcpy(key_at(to), key_at(from), static_cast<size_t>(row_bytes()));
    std::memcpy(value_at(to), value_at(from), static_cast<size_t>(row_bytes()));
    positions_of(to / kBlockTokens)[to % kBlockTokens] = position(from);
    mass(to) = mass(from);
  }
  tokens_ = static_cast<int64_t>(indices.size());
  blocks_.resize(static_cast<size_t>((tokens_ + kBlockTokens - 1) / kBlockTokens));
}

std::vector<float> HeadSegment::keys() const {
  std::vector<float> out(static_cast<size_t>(tokens_ * head_dim_));
  for (int64_t i = 0; i < tokens_; ++i) read_key(i, out.data() + i * head_dim_);
  return out;
}

std::vector<float> HeadSegment::values() const {
  std::vector<float> out(static_cast<size_t>(tokens_ * head_dim_));
  for (int64_t i = 0; i < tokens_; ++i) read_value(i, out.data() + i * head_dim_);
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
    out.push_back({keys_of(b), values_of(b), positions_of(b), track_mass_ ? mass_of(b) : nullptr, n, dtype_});
  }
}

}  // namespace kvshrink::kvstore
