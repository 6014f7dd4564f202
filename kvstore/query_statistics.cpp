#include "kvstore/query_statistics.h"

#include <cstddef>

namespace kvshrink::kvstore {

QueryStatistics::QueryStatistics(int64_t q_heads, int64_t head_dim, int64_t first_position)
    : q_heads_(q_heads),
      head_dim_(head_dim),
      first_position_(first_position),
      sum_(static_cast<size_t>(q_heads * head_dim), 0.0),
      outer_(static_cast<size_t>(q_heads * head_dim * head_dim), 0.0) {}

void QueryStatistics::add(const float* row, int32_t position) {
  if (!tracked() || position < first_position_) return;
  const int64_t d = head_dim_;
  for (int64_t j = 0; j < q_heads_; ++j) {
    const float* q = row + j * d;
    double* sum = sum_.data() + j * d;
    double* outer = outer_.data() + j * d * d;
    for (int64_t a = 0; a < d; ++a) {
      sum[a] += q[a];
      const double qa = q[a];
      for (int64_t b = 0; b < d; ++b) outer[a * d + b] += qa * q[b];
    }
  }
  ++count_;
}

std::vector<double> QueryStatistics::mean(int64_t j) const {
  const int64_t d = head_dim_;
  std::vector<double> out(static_cast<size_t>(d), 0.0);
  if (count_ == 0) return out;
  for (int64_t a = 0; a < d; ++a) out[a] = sum_[j * d + a] / static_cast<double>(count_);
  return out;
}

// E[q q^T] - mu mu^T
std::vector<double> QueryStatistics::covariance(int64_t j) const {
  const int64_t d = head_dim_;
  std::vector<double> out(static_cast<size_t>(d * d), 0.0);
  if (count_ == 0) return out;
  const auto mu = mean(j);
  const double n = static_cast<double>(count_);
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t b = 0; b < d; ++b) out[a * d + b] = outer_[(j * d + a) * d + b] / n - mu[a] * mu[b];
  }
  return out;
}

}  // namespace kvshrink::kvstore
