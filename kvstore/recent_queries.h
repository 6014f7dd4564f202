// The queries of the last `capacity` positions of one layer on one rank (RoPE applied), kept per
// sequence for presses that score with an observation window (SnapKV family, TOVA, profiling).
// Rows are this rank's query heads: [own q heads x head_dim] floats each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvshrink::kvstore {

class RecentQueries {
 public:
  RecentQueries(int64_t capacity, int64_t row_floats)
      : capacity_(capacity),
        row_floats_(row_floats),
        rows_(static_cast<size_t>(capacity * row_floats)),
        positions_(static_cast<size_t>(capacity)) {}

  int64_t capacity() const { return capacity_; }
  int64_t row_floats() const { return row_floats_; }
  // Rows held: min(capacity, rows pushed).
  int64_t size() const { return count_ < capacity_ ? count_ : capacity_; }
  void push(const float* row, int32_t position);
  // The last `n` (<= size()) rows, oldest first: queries [n x row_floats], positions [n].
  void last(int64_t n, std::vector<float>& queries, std::vector<int32_t>& positions) const;

 private:
  int64_t capacity_;
  int64_t row_floats_;
  int64_t count_ = 0;  // rows pushed so far; the next goes to slot count_ % capacity_
  std::vector<float> rows_;
  std::vector<int32_t> positions_;
};

}  // namespace kvshrink::kvstore
