#include "kvstore/head_segment.h"

#include <stdexcept>
#include <string>

namespace kvshrink::kvstore {

void HeadSegment::reserve(int64_t tokens) {
  keys_.reserve(static_cast<size_t>(tokens * head_dim_));
  values_.reserve(static_cast<size_t>(tokens * head_dim_));
  positions_.reserve(static_cast<size_t>(tokens));
  if (track_mass_) mass_.reserve(static_cast<size_t>(tokens));
}

void HeadSegment::append(const float* key, const float* value, int32_t position) {
  if (!positions_.empty() && position <= positions_.back()) {
    throw std::logic_error("HeadSegment: position " + std::to_string(position) + " after " +
                           std::to_string(positions_.back()));
  }
  keys_.insert(keys_.end(), key, key + head_dim_);
  values_.insert(values_.end(), value, value + head_dim_);
  positions_.push_back(position);
  if (track_mass_) mass_.push_back(0.0f);
}

void HeadSegment::append_from(const HeadSegment& from, int64_t index) {
  append(from.keys() + index * head_dim_, from.values() + index * head_dim_, from.positions()[index]);
  if (track_mass_) mass_.back() = from.track_mass_ ? from.mass_[static_cast<size_t>(index)] : 0.0f;
}

void HeadSegment::clear() {
  keys_.clear();
  values_.clear();
  positions_.clear();
  mass_.clear();
}

void HeadSegment::shrink_to_fit() {
  keys_.shrink_to_fit();
  values_.shrink_to_fit();
  positions_.shrink_to_fit();
  mass_.shrink_to_fit();
}

uint64_t HeadSegment::bytes_held() const {
  return (keys_.size() + values_.size()) * sizeof(float) + positions_.size() * sizeof(int32_t);
}

}  // namespace kvshrink::kvstore
