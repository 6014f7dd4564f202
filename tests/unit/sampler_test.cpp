// The sampler: greedy, and seeded temperature / top-k / top-p sampling.
#include "engine/generation/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <vector>

namespace kvshrink::engine {
namespace {

// Logits of a 5-token vocabulary; softmax at T = 1: ~ {0.64, 0.24, 0.087, 0.032, 0.012}.
const std::vector<float> kLogits = {4.0f, 3.0f, 2.0f, 1.0f, 0.0f};

std::map<TokenId, int> histogram(const SamplingParams& params, int draws) {
  Sampler sampler(params);
  std::map<TokenId, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(kLogits)];
  return counts;
}

TEST(Sampler, ZeroTemperatureIsArgmax) {
  Sampler sampler({});
  EXPECT_EQ(sampler.sample(kLogits), 0);
  const std::vector<float> tied = {1.0f, 5.0f, 5.0f};
  EXPECT_EQ(sampler.sample(tied), 1);  // lowest id wins a tie
}

TEST(Sampler, SameSeedSameTokens) {
  const SamplingParams params{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
  Sampler a(params), b(params);
  std::vector<TokenId> from_a, from_b;
  for (int i = 0; i < 200; ++i) {
    from_a.push_back(a.sample(kLogits));
    from_b.push_back(b.sample(kLogits));
  }
  EXPECT_EQ(from_a, from_b);
  Sampler c({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 43});
  std::vector<TokenId> from_c;
  for (int i = 0; i < 200; ++i) from_c.push_back(c.sample(kLogits));
  EXPECT_NE(from_a, from_c);
}

TEST(Sampler, FrequenciesFollowSoftmaxOfLogitsOverTemperature) {
  const int draws = 40000;
  for (float temperature : {1.0f, 2.0f}) {
    const auto counts = histogram({.temperature = temperature, .top_k = 0, .top_p = 1.0f, .seed = 7}, draws);
    double sum = 0.0;
    for (float l : kLogits) sum += std::exp(l / temperature);
    for (TokenId id = 0; id < 5; ++id) {
      const double expected = std::exp(kLogits[id] / temperature) / sum;
      const double observed = counts.count(id) ? counts.at(id) / static_cast<double>(draws) : 0.0;
      EXPECT_NEAR(observed, expected, 0.01) << "T=" << temperature << " id " << id;
    }
  }
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  const auto counts = histogram({.temperature = 5.0f, .top_k = 2, .top_p = 1.0f, .seed = 1}, 5000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts.at(0), 0);
  EXPECT_GT(counts.at(1), 0);
  EXPECT_EQ(histogram({.temperature = 5.0f, .top_k = 1, .top_p = 1.0f, .seed = 1}, 100).size(), 1u);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  // At T = 1: p0 = 0.64 < 0.7 <= p0 + p1 = 0.88, so exactly ids 0 and 1 remain.
  const auto counts = histogram({.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .seed = 3}, 20000);
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts.at(0) / 20000.0, 0.64 / 0.88, 0.015);
  EXPECT_EQ(histogram({.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 3}, 100).size(), 1u);
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  EXPECT_THROW(Sampler({.temperature = -1.0f}), std::invalid_argument);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = -1}), std::invalid_argument);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = 0, .top_p = 0.0f}), std::invalid_argument);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = 0, .top_p = 1.5f}), std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink::engine
