// Expected Attention against its definition computed by hand in double precision with explicit
// matrices: the query statistics (mean, population covariance, sinks left out), the averaged RoPE
// rotation (one position: exactly the backend's RoPE), R S R^T, and the scores of a small head
// across two segments: softmax over the non-sink tokens of mu'.k/sqrt(d) + k^T S' k/(2d), the mean
// over the group, times ||v||, as its log; sinks always kept. Within 1e-5.
#include "kvstore/expected_attention_press.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kvstore/kv_store.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

constexpr int64_t kDim = 8, kGroup = 2, kTokens = 12, kSinks = 2;
constexpr float kBase = 10000.0f;

// The explicit rotation matrix [d x d] of RoPE averaged over positions [from, from + count).
std::vector<double> rotation_matrix(int64_t from, int64_t count) {
  std::vector<double> r(kDim * kDim, 0.0);
  for (int64_t i = 0; i < kDim / 2; ++i) {
    const double inv_freq = std::pow(double(kBase), -2.0 * i / kDim);
    double c = 0, s = 0;
    for (int64_t p = from; p < from + count; ++p) c += std::cos(p * inv_freq), s += std::sin(p * inv_freq);
    c /= count, s /= count;
    r[(2 * i) * kDim + 2 * i] = c, r[(2 * i) * kDim + 2 * i + 1] = -s;
    r[(2 * i + 1) * kDim + 2 * i] = s, r[(2 * i + 1) * kDim + 2 * i + 1] = c;
  }
  return r;
}

std::vector<double> multiply(const std::vector<double>& a, const std::vector<double>& b, bool transpose_b) {
  std::vector<double> out(kDim * kDim, 0.0);
  for (int64_t i = 0; i < kDim; ++i)
    for (int64_t j = 0; j < kDim; ++j)
      for (int64_t k = 0; k < kDim; ++k)
        out[i * kDim + j] += a[i * kDim + k] * (transpose_b ? b[j * kDim + k] : b[k * kDim + j]);
  return out;
}

TEST(ExpectedAttention, OnePositionRotationIsRope) {
  const auto x = testing::normal_values(kDim, 1);
  std::vector<float> roped = x;
  const int32_t position = 37;
  kernels::cpu::CpuBackend().rope(roped.data(), 1, 1, kDim, &position, kBase);
  std::vector<double> mu(x.begin(), x.end());
  kvstore::rotate_mean(kvstore::mean_rope_rotation(kDim, kBase, position, 1), mu);
  for (int64_t a = 0; a < kDim; ++a) EXPECT_NEAR(mu[a], roped[a], 1e-5) << a;
}

TEST(ExpectedAttention, CovarianceRotationIsRSRt) {
  const auto values = testing::normal_values(kDim * kDim, 2);
  std::vector<double> cov(values.begin(), values.end());
  const auto r = rotation_matrix(100, 512);
  const auto expected = multiply(multiply(r, cov, false), r, true);
  kvstore::rotate_covariance(kvstore::mean_rope_rotation(kDim, kBase, 100, 512), cov);
  for (int64_t i = 0; i < kDim * kDim; ++i) EXPECT_NEAR(cov[i], expected[i], 1e-9) << i;
}

TEST(ExpectedAttention, ScoresEqualTheDefinitionByHand) {
  // f32: the scores are checked against the definition on the exact keys and values
  kvstore::KvStore kv(1, 1, kDim, kGroup, {.query_statistics_from = kSinks}, nullptr, kernels::KvDtype::kF32);
  const auto keys = testing::normal_values(kTokens * kDim, 3, 1.5f);
  const auto values = testing::normal_values(kTokens * kDim, 4);
  const auto queries = testing::normal_values(kTokens * kGroup * kDim, 5, 1.5f);  // pre-RoPE rows
  for (int64_t t = 0; t < kTokens; ++t) {
    if (t == 7) kv.head(0, 0).compact(std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6});  // two segments
    kv.head(0, 0).tail().append(keys.data() + t * kDim, values.data() + t * kDim, static_cast<int32_t>(t));
    kv.query_statistics(0).add(queries.data() + t * kGroup * kDim, static_cast<int32_t>(t));
  }
  kv.advance(kTokens);
  ASSERT_EQ(kv.query_statistics(0).count(), kTokens - kSinks);

  kvstore::PressParams params;
  params.sinks = kSinks;
  params.future_positions = 64;
  kernels::cpu::CpuBackend backend;
  std::vector<float> scores(kTokens);
  kvstore::ExpectedAttentionPress(params).score(
      {kv.head(0, 0), kv.recent_queries(0), 0, kGroup, kTokens, backend, &kv.query_statistics(0), kBase},
      scores);

  const auto r = rotation_matrix(kTokens, 64);
  std::vector<double> expected(kTokens, 0.0);
  for (int64_t j = 0; j < kGroup; ++j) {
    std::vector<double> mu(kDim, 0.0), cov(kDim * kDim, 0.0);
    const double n = kTokens - kSinks;
    for (int64_t t = kSinks; t < kTokens; ++t)
      for (int64_t a = 0; a < kDim; ++a) mu[a] += queries[(t * kGroup + j) * kDim + a] / n;
    for (int64_t t = kSinks; t < kTokens; ++t)
      for (int64_t a = 0; a < kDim; ++a)
        for (int64_t b = 0; b < kDim; ++b)
          cov[a * kDim + b] += (queries[(t * kGroup + j) * kDim + a] - mu[a]) *
                               (queries[(t * kGroup + j) * kDim + b] - mu[b]) / n;
    std::vector<double> mu_r(kDim, 0.0);
    for (int64_t a = 0; a < kDim; ++a)
      for (int64_t b = 0; b < kDim; ++b) mu_r[a] += r[a * kDim + b] * mu[b];
    const auto cov_r = multiply(multiply(r, cov, false), r, true);
    std::vector<double> z(kTokens, 0.0);
    double top = -1e300, sum = 0.0;
    for (int64_t t = kSinks; t < kTokens; ++t) {
      const float* k = keys.data() + t * kDim;
      for (int64_t a = 0; a < kDim; ++a) {
        z[t] += mu_r[a] * k[a] / std::sqrt(double(kDim));
        for (int64_t b = 0; b < kDim; ++b) z[t] += k[a] * cov_r[a * kDim + b] * k[b] / (2.0 * kDim);
      }
      top = std::max(top, z[t]);
    }
    for (int64_t t = kSinks; t < kTokens; ++t) sum += std::exp(z[t] - top);
    for (int64_t t = kSinks; t < kTokens; ++t) expected[t] += std::exp(z[t] - top) / sum / kGroup;
  }
  for (int64_t t = 0; t < kSinks; ++t) EXPECT_EQ(scores[t], kvstore::kAlwaysKeep) << t;
  for (int64_t t = kSinks; t < kTokens; ++t) {
    double norm = 0.0;
    for (int64_t a = 0; a < kDim; ++a) norm += double(values[t * kDim + a]) * values[t * kDim + a];
    EXPECT_NEAR(scores[t], std::log(expected[t] * std::sqrt(norm)), 1e-5) << t;
  }
}

TEST(ExpectedAttention, RefusesAStoreWithoutQueryStatistics) {
  kvstore::KvStore kv(1, 1, kDim, kGroup);
  kv.head(0, 0).tail().append(std::vector<float>(kDim, 1.0f).data(), std::vector<float>(kDim, 1.0f).data(),
                              5);
  kv.advance(6);
  kernels::cpu::CpuBackend backend;
  std::vector<float> scores(1);
  EXPECT_THROW(
      kvstore::ExpectedAttentionPress(kvstore::PressParams{})
          .score({kv.head(0, 0), kv.recent_queries(0), 0, kGroup, 6, backend, &kv.query_statistics(0)},
                 scores),
      std::logic_error);
}

}  // namespace
}  // namespace kvshrink
