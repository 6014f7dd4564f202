// Allocators on hand-made scores: every allocator spends at most the global budget (exactly, when
// there are enough candidates), keeps the always-kept tokens, and distributes as its paper says.
#include <gtest/gtest.h>

#include <limits>
#include <numeric>
#include <vector>

#include "kvstore/adakv_allocator.h"
#include "kvstore/dynamickv_allocator.h"
#include "kvstore/headkv_allocator.h"
#include "kvstore/press.h"
#include "kvstore/pyramid_allocator.h"
#include "kvstore/uniform_allocator.h"

namespace kvshrink {
namespace {

using kvstore::kAlwaysKeep;

int64_t sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

// n_layers x n_heads heads of n tokens; the last `window` always kept; head (l, h) has scores that
// are larger when `peaked` says so.
std::vector<std::vector<float>> make_scores(int64_t n_layers, int64_t n_heads, int64_t n, int64_t window) {
  std::vector<std::vector<float>> scores;
  for (int64_t l = 0; l < n_layers; ++l) {
    for (int64_t h = 0; h < n_heads; ++h) {
      std::vector<float> s(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t)
        s[t] = static_cast<float>(((t * 7 + h * 3 + l) % 11) + 1) * (h + 1) * (l + 1);
      for (int64_t t = n - window; t < n; ++t) s[t] = kAlwaysKeep;
      scores.push_back(s);
    }
  }
  return scores;
}

TEST(Apportion, SumsExactlyAndRespectsCaps) {
  const std::vector<double> weights = {1, 2, 3, 0};
  const std::vector<int64_t> caps = {10, 3, 100, 5};
  const auto parts = kvstore::apportion(20, weights, caps);
  EXPECT_EQ(sum(parts), 20);
  EXPECT_LE(parts[1], 3);
  EXPECT_EQ(parts[3], 0);
  EXPECT_EQ(kvstore::apportion(1000, weights, caps), caps);
}

TEST(SelectTop, KeepsHighestAndBreaksTiesTowardLaterTokens) {
  const std::vector<std::vector<float>> scores = {{5, 1, 5, kAlwaysKeep, 2}};
  const std::vector<int64_t> budgets = {3};
  EXPECT_EQ(kvstore::select_top(scores, budgets)[0], (std::vector<int32_t>{0, 2, 3}));
  const std::vector<int64_t> two = {2};
  EXPECT_EQ(kvstore::select_top(scores, two)[0], (std::vector<int32_t>{2, 3}));
}

TEST(Allocators, EverySpendsTheBudgetExactly) {
  const int64_t L = 4, H = 3, n = 100, w = 8, budget = 30;
  const auto scores = make_scores(L, H, n, w);
  const kvstore::AllocationInput input{L, H, scores, budget};
  std::vector<double> profile(L * H);
  for (size_t i = 0; i < profile.size(); ++i) profile[i] = static_cast<double>(i % 5);
  const kvstore::UniformAllocator uniform;
  const kvstore::PyramidAllocator pyramid(20);
  const kvstore::AdaKvAllocator adakv(0.2);
  const kvstore::HeadKvAllocator headkv(profile, 1.01);
  const kvstore::DynamicKvAllocator dynamickv(10);
  for (const kvstore::Allocator* a :
       std::vector<const kvstore::Allocator*>{&uniform, &pyramid, &adakv, &headkv, &dynamickv}) {
    const auto budgets = a->head_budgets(input);
    EXPECT_EQ(sum(budgets), L * H * budget) << a->name();
    for (auto b : budgets) {
      EXPECT_GE(b, w) << a->name();  // the window is always kept
      EXPECT_LE(b, n) << a->name();
    }
  }
}

TEST(Allocators, PyramidFallsWithDepth) {
  const int64_t L = 5, H = 2;
  const auto scores = make_scores(L, H, 200, 8);
  const auto budgets = kvstore::PyramidAllocator(20).head_budgets({L, H, scores, 40});
  for (int64_t l = 1; l < L; ++l) EXPECT_LT(budgets[l * H], budgets[(l - 1) * H]);
  EXPECT_NEAR(budgets[0] - 8, 2 * 32 - 32 / 20.0, 1.5);  // bottom ~ 2b - b/beta
}

TEST(Allocators, AdaKvMovesBudgetToTheHeadWithTheTopScoresWithinALayer) {
  // head 1's candidates all outscore head 0's: with alpha 0.2 head 1 gets 0.8 * 2b + 0.2 b.
  std::vector<std::vector<float>> scores = {std::vector<float>(50, 1.0f), std::vector<float>(50, 9.0f)};
  const auto budgets = kvstore::AdaKvAllocator(0.2).head_budgets({1, 2, scores, 10});
  EXPECT_EQ(budgets[1], 18);
  EXPECT_EQ(budgets[0], 2);
  EXPECT_EQ(sum(budgets), 20);
}

TEST(Allocators, HeadKvFollowsTheProfileAndKeepsAFloor) {
  const auto scores = make_scores(1, 4, 200, 0);
  const std::vector<double> profile = {0, 1, 0, 3};
  const auto budgets = kvstore::HeadKvAllocator(profile, 2.0).head_budgets({1, 4, scores, 40});
  EXPECT_EQ(budgets[0], 20);  // b - b/beta
  EXPECT_EQ(budgets[2], 20);
  EXPECT_GT(budgets[3], budgets[1]);
  EXPECT_EQ(sum(budgets), 160);
}

TEST(Allocators, DynamicKvGivesEveryHeadOfALayerTheSameSize) {
  const int64_t L = 3, H = 3;
  const auto scores = make_scores(L, H, 100, 4);
  const auto budgets = kvstore::DynamicKvAllocator(10).head_budgets({L, H, scores, 20});
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t h = 1; h < H; ++h) EXPECT_EQ(budgets[l * H + h], budgets[l * H]);
  }
  EXPECT_GT(budgets[2 * H], budgets[0]);  // deeper layers have larger raw scores here
}

TEST(Allocators, ShortSequencesKeepEverything) {
  const auto scores = make_scores(2, 2, 10, 4);
  const auto budgets = kvstore::UniformAllocator().head_budgets({2, 2, scores, 64});
  for (auto b : budgets) EXPECT_EQ(b, 10);
}

}  // namespace
}  // namespace kvshrink
