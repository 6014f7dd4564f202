#include "kvstore/head_segment.h"

#include <stdexcept>
#include <string>

namespace kvshrink::kvstore {

void HeadSegment::reserve(int64_t tokens) {
  keys_.reserve(static_cast<size_t>(tokens * head_dim_));
  values_.reserve(static_cast<size_t>(tokens * head_dim_));
  positions_.reserve(static_cast<size_t>(tokens));
}

void HeadSegment::append(const float* key, const float* value, int32_t position) {
  if (!positions_.empty() && position <= positions_.back()) {
    throw std::logic_error("HeadSegment: position " + std::to_string(position) + " after " +
                           std::to_string(positions_.back()));
  }
  keys_.insert(keys_.end(), key, key + head_dim_);
  values_.insert(values_.end(), value, value + head_dim_);
  positions_.push_back(position);
}

void HeadSegment::clear() {
  keys_.clear();
  values_.clear();
  positions_.clear();
}

uint64_t HeadSegment::bytes_held() const {
  return (keys_.size() + values_.size()) * sizeof(float) + positions_.size() * sizeof(int32_t);
}

}  // namespace kvshrink::kvstore
