// Running statistics of one layer's queries before RoPE on one rank, for presses that score keys
// against the queries a sequence is expected to ask later (Expected Attention). Per own query head
// j: the count of rows added, their sum [d] and the sum of their outer products [d x d], row-major,
// in f64. Rows at positions before `first_position` are not counted (the attention sinks, whose
// queries are outliers: kvpress's n_sink).
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::kvstore {

class QueryStatistics {
 public:
  QueryStatistics() = default;
  QueryStatistics(int64_t q_heads, int64_t head_dim, int64_t first_position);

  bool tracked() const { return q_heads_ > 0; }
  int64_t q_heads() const { return q_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t count() const { return count_; }
  // Adds one token's queries: row [q_heads x head_dim], before RoPE.
  void add(const float* row, int32_t position);
  // Query head j's mean [d] and covariance [d x d] (population, divided by count; zero when empty).
  std::vector<double> mean(int64_t j) const;
  std::vector<double> covariance(int64_t j) const;

 private:
  int64_t q_heads_ = 0;
  int64_t head_dim_ = 0;
  int64_t first_position_ = 0;
  int64_t count_ = 0;
  std::vector<double> sum_;    // [q_heads x d]
  std::vector<double> outer_;  // [q_heads x d x d]
};

}  // namespace kvshrink::kvstore
