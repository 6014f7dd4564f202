// Allocators on hand-made scores: every allocator spends at most the global budget (exactly, when
// there are enough candidates), keeps the always-kept tokens, and distributes as its paper says.
#include "kvstore/allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
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
// One of each allocator (HeadKV with a made-up profile of n_heads_total heads).
std::vector<std::unique_ptr<kvstore::Allocator>> every_allocator(int64_t n_heads_total) {
  std::vector<double> profile(static_cast<size_t>(n_heads_total));
  for (size_t i = 0; i < profile.size(); ++i) profile[i] = static_cast<double>(i % 5);
  std::vector<std::unique_ptr<kvstore::Allocator>> out;
  out.push_back(std::make_unique<kvstore::UniformAllocator>());
  out.push_back(std::make_unique<kvstore::PyramidAllocator>(20));
  out.push_back(std::make_unique<kvstore::AdaKvAllocator>(0.2));
  out.push_back(std::make_unique<kvstore::HeadKvAllocator>(profile, 1.01));
  out.push_back(std::make_unique<kvstore::DynamicKvAllocator>(10));
  return out;
}

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
  const auto allocators = every_allocator(L * H);
  for (const auto& a : allocators) {
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

TEST(ChunkScores, SizeOneLeavesTheScoresBitIdentical) {
  auto scores = make_scores(1, 1, 37, 5)[0];
  scores[3] = -2.5f;
  scores[4] = 1e-30f;
  const auto before = scores;
  kvstore::chunk_scores(scores, 1);
  EXPECT_EQ(std::memcmp(scores.data(), before.data(), scores.size() * sizeof(float)), 0);
  EXPECT_THROW(kvstore::chunk_scores(scores, 0), std::invalid_argument);
}

TEST(ChunkScores, MeanOverTheChunksCandidatesAlwaysKeptUntouched) {
  // chunks of 4: {1,2,3,6} {8,inf,inf,2} {5,7}; the last chunk is partial
  std::vector<float> scores = {1, 2, 3, 6, 8, kAlwaysKeep, kAlwaysKeep, 2, 5, 7};
  kvstore::chunk_scores(scores, 4);
  EXPECT_EQ(scores, (std::vector<float>{3, 3, 3, 3, 5, kAlwaysKeep, kAlwaysKeep, 5, 6, 6}));
  std::vector<float> window = {kAlwaysKeep, kAlwaysKeep};
  kvstore::chunk_scores(window, 4);
  EXPECT_EQ(window, (std::vector<float>{kAlwaysKeep, kAlwaysKeep}));
}

// Deterministic scores without ties; the last `window` tokens and the first `sinks` always kept.
std::vector<std::vector<float>> random_scores(int64_t n_layers, int64_t n_heads, int64_t n, int64_t window,
                                              int64_t sinks) {
  uint64_t state = 88172645463325252ull;
  std::vector<std::vector<float>> scores;
  for (int64_t i = 0; i < n_layers * n_heads; ++i) {
    std::vector<float> s(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      s[t] = static_cast<float>(state % 1000003) / 1000003.0f * static_cast<float>(1 + i % 3);
    }
    for (int64_t t = 0; t < sinks; ++t) s[t] = kAlwaysKeep;
    for (int64_t t = n - window; t < n; ++t) s[t] = kAlwaysKeep;
    scores.push_back(s);
  }
  return scores;
}

// Every allocator, chunks of 4 and 7 (not dividing the sequence): the same budgets in all (the
// budget counts tokens), every always-kept token kept, and per head at most one chunk cut, the cut
// one keeping its latest candidates; the kept candidates are the chunks of highest mean.
TEST(ChunkSelection, KeepsWholeChunksWithinTheBudget) {
  const int64_t L = 3, H = 4, n = 203, w = 8, sinks = 2, budget = 50;
  const auto allocators = every_allocator(L * H);
  for (const int64_t chunk : {4, 7}) {
    auto scores = random_scores(L, H, n, w, sinks);
    const auto raw = scores;
    for (auto& head : scores) kvstore::chunk_scores(head, chunk);
    for (const auto& a : allocators) {
      SCOPED_TRACE(std::string(a->name()) + " chunk " + std::to_string(chunk));
      const auto budgets = a->head_budgets({L, H, scores, budget});
      EXPECT_EQ(sum(budgets), L * H * budget);
      const auto kept = kvstore::select_top(scores, budgets);
      for (size_t h = 0; h < kept.size(); ++h) {
        ASSERT_EQ(static_cast<int64_t>(kept[h].size()), budgets[h]);
        std::vector<bool> is_kept(static_cast<size_t>(n), false);
        for (int32_t t : kept[h]) is_kept[t] = true;
        int64_t cut = 0;
        float lowest_kept = kAlwaysKeep, highest_dropped = -kAlwaysKeep;
        for (int64_t begin = 0; begin < n; begin += chunk) {
          const int64_t end = std::min(n, begin + chunk);
          int64_t candidates = 0, taken = 0;
          double mean = 0.0;
          for (int64_t t = begin; t < end; ++t) {
            if (raw[h][t] == kAlwaysKeep) {
              EXPECT_TRUE(is_kept[t]) << "always-kept token " << t;
              continue;
            }
            ++candidates, mean += raw[h][t];
            taken += is_kept[t] ? 1 : 0;
          }
          if (candidates == 0) continue;
          mean /= static_cast<double>(candidates);
          if (taken > 0 && taken < candidates) {
            ++cut;
            // the cut chunk keeps its latest candidates: no dropped one after a kept one
            bool seen_kept = false;
            for (int64_t t = begin; t < end; ++t) {
              if (raw[h][t] == kAlwaysKeep) continue;
              if (is_kept[t])
                seen_kept = true;
              else
                EXPECT_FALSE(seen_kept) << "chunk at " << begin << " keeps an earlier candidate";
            }
          } else if (taken == candidates) {
            lowest_kept = std::min(lowest_kept, static_cast<float>(mean));
          } else {
            highest_dropped = std::max(highest_dropped, static_cast<float>(mean));
          }
        }
        EXPECT_LE(cut, 1) << "head " << h;
        EXPECT_GE(lowest_kept, highest_dropped) << "head " << h;
      }
    }
  }
}

// Chunk size 1 is today's per-token selection: same budgets and kept sets for every allocator.
TEST(ChunkSelection, SizeOneIsPerTokenSelection) {
  const int64_t L = 2, H = 3, n = 120, w = 8, budget = 30;
  const auto raw = random_scores(L, H, n, w, 0);
  auto chunked = raw;
  for (auto& head : chunked) kvstore::chunk_scores(head, 1);
  const kvstore::AdaKvAllocator adakv(0.2);
  const kvstore::PyramidAllocator pyramid(20);
  for (const kvstore::Allocator* a : std::vector<const kvstore::Allocator*>{&adakv, &pyramid}) {
    const auto budgets = a->head_budgets({L, H, raw, budget});
    EXPECT_EQ(a->head_budgets({L, H, chunked, budget}), budgets);
    EXPECT_EQ(kvstore::select_top(chunked, budgets), kvstore::select_top(raw, budgets));
  }
}

}  // namespace
}  // namespace kvshrink
