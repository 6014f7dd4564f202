#include "kvstore/recent_queries.h"

#include <algorithm>
#include <stdexcept>

namespace kvshrink::kvstore {

void RecentQueries::push(const float* row, int32_t position) {
  if (capacity_ == 0) return;
  const int64_t slot = count_ % capacity_;
  std::copy_n(row, row_floats_, rows_.data() + slot * row_floats_);
  positions_[static_cast<size_t>(slot)] = position;
  ++count_;
}

void RecentQueries::last(int64_t n, std::vector<float>& queries, std::vector<int32_t>& positions) const {
  if (n < 0 || n > size()) throw std::out_of_range("RecentQueries: more rows asked than held");
  queries.resize(static_cast<size_t>(n * row_floats_));
  positions.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = (count_ - n + i) % capacity_;
    std::copy_n(rows_.data() + slot * row_floats_, row_floats_, queries.data() + i * row_floats_);
    positions[static_cast<size_t>(i)] = positions_[static_cast<size_t>(slot)];
  }
}

}  // namespace kvshrink::kvstore
