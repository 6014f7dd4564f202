// Expected Attention (kvpress's ExpectedAttentionPress): a query-agnostic score of each key by the
// attention the queries to come are expected to give it. The queries of the tokens seen so far
// (before RoPE, the first `sinks` positions left out) are modelled as a Gaussian per query head,
// mean mu and covariance S; rotated by R, the RoPE rotation averaged over the next
// `future_positions` positions, their expected logit for a post-RoPE key k is
//   z = (R mu) . k / sqrt(d) + k^T (R S R^T) k / (2 d)
// (the log of E[exp(q . k / sqrt(d))] for a Gaussian q, its variance term scaled as kvpress does).
// Scores: softmax of z over the head's tokens, the mean over the group's query heads, times ||v||,
// kept as its natural log (the same order; on real models z spreads over hundreds, where the
// probabilities themselves underflow to ties).
// The sinks (positions < sinks) are always kept. Reads the store's running query statistics
// (kvstore/query_statistics.h), so it needs no question and no observation window.
#pragma once

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

class ExpectedAttentionPress final : public Press {
 public:
  explicit ExpectedAttentionPress(const PressParams& params)
      : sinks_(params.sinks), future_positions_(params.future_positions) {}
  std::string_view name() const override { return "expected-attention"; }
  int64_t query_statistics_from() const override { return sinks_; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;

 private:
  int64_t sinks_;
  int64_t future_positions_;
};

// The 2 x 2 blocks of the RoPE rotation averaged over positions [from, from + count): for pair i,
// cos_mean[i] = mean cos(p theta_i), sin_mean[i] = mean sin(p theta_i), theta_i = base^(-2i/d)
// (the pairs (2i, 2i+1) of kernels/backend.h's rope).
struct MeanRotation {
  std::vector<double> cos_mean, sin_mean;  // [head_dim / 2]
};
MeanRotation mean_rope_rotation(int64_t head_dim, float freq_base, int64_t from, int64_t count);

// In place: mu = R mu [d]; cov = R cov R^T [d x d], row-major.
void rotate_mean(const MeanRotation& r, std::vector<double>& mu);
void rotate_covariance(const MeanRotation& r, std::vector<double>& cov);

}  // namespace kvshrink::kvstore
