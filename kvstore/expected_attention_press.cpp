#include "kvstore/expected_attention_press.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace kvshrink::kvstore {

MeanRotation mean_rope_rotation(int64_t head_dim, float freq_base, int64_t from, int64_t count) {
  const int64_t half = head_dim / 2;
  MeanRotation r{std::vector<double>(half, 0.0), std::vector<double>(half, 0.0)};
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq =
        std::pow(static_cast<double>(freq_base), -2.0 * static_cast<double>(i) / head_dim);
    for (int64_t p = from; p < from + count; ++p) {
      r.cos_mean[i] += std::cos(static_cast<double>(p) * inv_freq);
      r.sin_mean[i] += std::sin(static_cast<double>(p) * inv_freq);
    }
    r.cos_mean[i] /= static_cast<double>(count);
    r.sin_mean[i] /= static_cast<double>(count);
  }
  return r;
}

namespace {

// (x0, x1) -> (c x0 - s x1, s x0 + c x1), as RoPE rotates a pair
void rotate_pair(double c, double s, double& x0, double& x1) {
  const double a = x0, b = x1;
  x0 = c * a - s * b;
  x1 = s * a + c * b;
}

}  // namespace

void rotate_mean(const MeanRotation& r, std::vector<double>& mu) {
  for (size_t i = 0; i < r.cos_mean.size(); ++i)
    rotate_pair(r.cos_mean[i], r.sin_mean[i], mu[2 * i], mu[2 * i + 1]);
}

// R cov (each column's pairs), then (R cov) R^T (each row's pairs)
void rotate_covariance(const MeanRotation& r, std::vector<double>& cov) {
  const auto d = static_cast<int64_t>(2 * r.cos_mean.size());
  for (size_t i = 0; i < r.cos_mean.size(); ++i) {
    const double c = r.cos_mean[i], s = r.sin_mean[i];
    for (int64_t b = 0; b < d; ++b) rotate_pair(c, s, cov[(2 * i) * d + b], cov[(2 * i + 1) * d + b]);
    for (int64_t a = 0; a < d; ++a) rotate_pair(c, s, cov[a * d + 2 * i], cov[a * d + 2 * i + 1]);
  }
}

namespace {

// Expected logits of one query head for every key: mu . k / sqrt(d) + k^T cov k / (2 d), the
// quadratic forms through one product cov_keys [n x d] = keys [n x d] . cov^T (cov is symmetric).
std::vector<double> expected_logits(const std::vector<double>& mu, const std::vector<double>& cov,
                                    const std::vector<float>& keys, int64_t d, kernels::Backend& backend) {
  const auto n = static_cast<int64_t>(keys.size()) / d;
  const std::vector<float> cov_f32(cov.begin(), cov.end());
  std::vector<float> cov_keys(keys.size());
  backend.matmul_f32(keys.data(), cov_f32.data(), cov_keys.data(), n, d, d);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    const float* k = keys.data() + t * d;
    double linear = 0.0, quadratic = 0.0;
    for (int64_t a = 0; a < d; ++a) {
      linear += mu[a] * k[a];
      quadratic += static_cast<double>(k[a]) * cov_keys[t * d + a];
    }
    out[t] = linear / std::sqrt(static_cast<double>(d)) + quadratic / (2.0 * static_cast<double>(d));
  }
  return out;
}

// In place: x = log softmax(x).
void log_softmax(std::vector<double>& x) {
  const double top = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (double v : x) sum += std::exp(v - top);
  const double log_denominator = top + std::log(sum);
  for (auto& v : x) v -= log_denominator;
}

// log(exp(a) + exp(b)), either may be -inf
double log_add(double a, double b) {
  if (a < b) std::swap(a, b);
  return a == -std::numeric_limits<double>::infinity() ? a : a + std::log1p(std::exp(b - a));
}

}  // namespace

void ExpectedAttentionPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  const auto* statistics = input.query_statistics;
  if (statistics == nullptr || !statistics->tracked()) {
    throw std::logic_error("expected-attention: the store keeps no query statistics");
  }
  const int64_t d = input.head.head_dim();
  std::vector<float> keys;  // the non-sink tokens' [n x d]
  std::vector<size_t> at;   // their index in scores
  std::vector<double> value_norms;
  std::vector<float> value(static_cast<size_t>(d));
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      if (segment.position(i) < sinks_) {
        scores[t] = kAlwaysKeep;
        continue;
      }
      keys.resize(keys.size() + static_cast<size_t>(d));
      segment.read_key(i, keys.data() + keys.size() - d);
      segment.read_value(i, value.data());
      at.push_back(t);
      double squares = 0.0;
      for (int64_t k = 0; k < d; ++k) squares += static_cast<double>(value[k]) * value[k];
      value_norms.push_back(std::sqrt(squares));
    }
  }
  if (keys.empty()) return;
  const auto rotation = mean_rope_rotation(d, input.rope_freq_base, input.next_position, future_positions_);
  // log of the group's summed probabilities: the expected logits spread over hundreds on real
  // models, where probabilities underflow and would tie
  std::vector<double> log_sum(at.size(), -std::numeric_limits<double>::infinity());
  for (int64_t j = 0; j < input.group; ++j) {
    auto mu = statistics->mean(input.first_q_head + j);
    auto cov = statistics->covariance(input.first_q_head + j);
    rotate_mean(rotation, mu);
    rotate_covariance(rotation, cov);
    auto log_p = expected_logits(mu, cov, keys, d, input.backend);
    log_softmax(log_p);
    for (size_t n = 0; n < log_p.size(); ++n) log_sum[n] = log_add(log_sum[n], log_p[n]);
  }
  const double log_group = std::log(static_cast<double>(input.group));
  for (size_t n = 0; n < at.size(); ++n)
    scores[at[n]] = static_cast<float>(log_sum[n] - log_group + std::log(value_norms[n]));
}

}  // namespace kvshrink::kvstore
