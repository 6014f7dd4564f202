// SnapKV scores against attention computed by hand (double precision, explicit loops) on a small
// case: 2 query heads per kv head, a window of 3 recent queries, 10 tokens, max and average
// pooling with kernel 3; the window tokens are always kept. Also the smaller presses' rules.
#include "kvstore/snapkv_press.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kvstore/h2o_press.h"
#include "kvstore/knorm_press.h"
#include "kvstore/kv_store.h"
#include "kvstore/streaming_llm_press.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

constexpr int64_t kDim = 4, kGroup = 2, kTokens = 10, kWindow = 3;

struct SmallCase {
  // f32: the scores are checked against the definitions on the exact keys
  kvstore::KvStore kv{1, 1, kDim, kGroup, {.query_window = kWindow}, nullptr, kernels::KvDtype::kF32};
  mutable kernels::cpu::CpuBackend backend;
  std::vector<float> keys = testing::normal_values(kTokens * kDim, 11, 1.5f);
  std::vector<float> queries =
      testing::normal_values(kTokens * kGroup * kDim, 12, 1.5f);  // one row per position

  SmallCase() {
    for (int64_t t = 0; t < kTokens; ++t) {
      // two segments (6 + 4 tokens) to check scoring across them
      if (t == 6) kv.head(0, 0).compact(std::vector<int32_t>{0, 1, 2, 3, 4, 5});
      kv.head(0, 0).tail().append(keys.data() + t * kDim, keys.data() + t * kDim, static_cast<int32_t>(t));
      kv.recent_queries(0).push(queries.data() + t * kGroup * kDim, static_cast<int32_t>(t));
    }
    kv.advance(kTokens);
  }
  kvstore::HeadScoringInput input() const {
    return {kv.head(0, 0), kv.recent_queries(0), 0, kGroup, kv.next_position(), backend};
  }

  // By hand: vote[t] = mean over window queries i and heads j of softmax over visible tokens.
  std::vector<double> votes() const {
    std::vector<double> vote(kTokens, 0.0);
    for (int64_t i = kTokens - kWindow; i < kTokens; ++i) {
      for (int64_t j = 0; j < kGroup; ++j) {
        std::vector<double> logit(static_cast<size_t>(i + 1));
        double top = -1e300;
        for (int64_t t = 0; t <= i; ++t) {
          double dot = 0.0;
          for (int64_t k = 0; k < kDim; ++k)
            dot += double(queries[(i * kGroup + j) * kDim + k]) * keys[t * kDim + k];
          logit[t] = dot / std::sqrt(double(kDim));
          top = std::max(top, logit[t]);
        }
        double sum = 0.0;
        for (auto& x : logit) sum += (x = std::exp(x - top));
        for (int64_t t = 0; t <= i; ++t) vote[t] += logit[t] / sum / (kWindow * kGroup);
      }
    }
    return vote;
  }
};

TEST(SnapKvPress, ScoresEqualWindowAttentionByHandWithMaxPooling) {
  SmallCase c;
  kvstore::PressParams params;
  params.window = kWindow;
  params.pool_kernel = 3;
  params.pool_type = kvstore::PoolType::kMax;
  std::vector<float> scores(kTokens);
  kvstore::SnapKvPress(params).score(c.input(), scores);
  const auto vote = c.votes();
  const int64_t prefix = kTokens - kWindow;
  for (int64_t t = 0; t < prefix; ++t) {
    double pooled = 0.0;
    for (int64_t u = std::max<int64_t>(0, t - 1); u <= std::min(prefix - 1, t + 1); ++u)
      pooled = std::max(pooled, vote[u]);
    EXPECT_NEAR(scores[t], pooled, 1e-5) << t;
  }
  for (int64_t t = prefix; t < kTokens; ++t) EXPECT_EQ(scores[t], kvstore::kAlwaysKeep);
}

TEST(SnapKvPress, AveragePoolingDividesByTheKernelAtTheEdges) {
  SmallCase c;
  kvstore::PressParams params;
  params.window = kWindow;
  params.pool_kernel = 3;
  params.pool_type = kvstore::PoolType::kAverage;
  std::vector<float> scores(kTokens);
  kvstore::SnapKvPress(params).score(c.input(), scores);
  const auto vote = c.votes();
  const int64_t prefix = kTokens - kWindow;
  for (int64_t t = 0; t < prefix; ++t) {
    double sum = 0.0;
    for (int64_t u = std::max<int64_t>(0, t - 1); u <= std::min(prefix - 1, t + 1); ++u) sum += vote[u];
    EXPECT_NEAR(scores[t], sum / 3.0, 1e-5) << t;
  }
}

TEST(Presses, StreamingLlmKeepsSinksAndPrefersRecent) {
  SmallCase c;
  kvstore::PressParams params;
  params.sinks = 2;
  std::vector<float> scores(kTokens);
  kvstore::StreamingLlmPress(params).score(c.input(), scores);
  EXPECT_EQ(scores[0], kvstore::kAlwaysKeep);
  EXPECT_EQ(scores[1], kvstore::kAlwaysKeep);
  for (int64_t t = 3; t < kTokens; ++t) EXPECT_GT(scores[t], scores[t - 1]);
}

TEST(Presses, KnormPrefersLowNormKeys) {
  SmallCase c;
  std::vector<float> scores(kTokens);
  kvstore::KnormPress().score(c.input(), scores);
  for (int64_t t = 0; t < kTokens; ++t) {
    double norm = 0.0;
    for (int64_t k = 0; k < kDim; ++k) norm += double(c.keys[t * kDim + k]) * c.keys[t * kDim + k];
    EXPECT_NEAR(scores[t], -std::sqrt(norm), 1e-5);
  }
}

TEST(Presses, H2oDividesAccumulatedAttentionByTheQueriesThatSawTheToken) {
  kvstore::KvStore kv(1, 1, kDim, kGroup, {.track_attention_mass = true});
  const auto keys = testing::normal_values(5 * kDim, 3, 1.5f);
  for (int32_t t = 0; t < 5; ++t)
    kv.head(0, 0).tail().append(keys.data() + t * kDim, keys.data() + t * kDim, t);
  kv.advance(5);
  for (int t = 0; t < 5; ++t) kv.head(0, 0).tail().mass(t) = 1.0f;
  kvstore::PressParams params;
  params.window = 1;
  std::vector<float> scores(5);
  kernels::cpu::CpuBackend backend;
  kvstore::H2oPress(params).score({kv.head(0, 0), kv.recent_queries(0), 0, kGroup, 5, backend}, scores);
  EXPECT_FLOAT_EQ(scores[0], 1.0f / 5);
  EXPECT_FLOAT_EQ(scores[3], 1.0f / 2);
  EXPECT_EQ(scores[4], kvstore::kAlwaysKeep);
}

}  // namespace
}  // namespace kvshrink
