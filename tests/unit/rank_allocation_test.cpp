// The multiple-choice knapsack behind MixedDimKV and DynaKV (kvstore/rank_allocation.h) against
// exhaustive search on small cases, and its errors.
#include "kvstore/rank_allocation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace kvshrink::kvstore {
namespace {

constexpr float kForbidden = std::numeric_limits<float>::infinity();

struct Best {
  double loss = std::numeric_limits<double>::infinity();
};

void search(const std::vector<float>& losses, const std::vector<double>& costs, int64_t items, int64_t i,
            double loss, double cost, double budget, Best& best) {
  if (cost > budget) return;
  if (i == items) {
    best.loss = std::min(best.loss, loss);
    return;
  }
  for (size_t j = 0; j < costs.size(); ++j) {
    const float l = losses[static_cast<size_t>(i) * costs.size() + j];
    if (!std::isinf(l)) search(losses, costs, items, i + 1, loss + l, cost + costs[j], budget, best);
  }
}

TEST(RankAllocationTest, NearTheExhaustiveOptimumWithinBudget) {
  // ranks 0, 2, 4, 8 of a head_dim-8 head; loss = importance * error(rank), error falling with rank
  const std::vector<int64_t> ranks = {0, 2, 4, 8};
  std::vector<double> costs;
  for (const auto r : ranks) costs.push_back(rank_cost(r, kernels::KvDtype::kF16));
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int64_t items = 7;
  int exact = 0;
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<float> losses;
    for (int64_t i = 0; i < items; ++i) {
      const float importance = uniform(rng);
      const float e2 = 0.3f + 0.4f * uniform(rng);
      const float e4 = e2 * (0.3f + 0.4f * uniform(rng));
      for (const float error : {2.0f, e2, e4, 0.0f}) losses.push_back(importance * error);
    }
    const double budget = 10.0 + 60.0 * uniform(rng);
    const auto choice = choose_options(losses, items, costs, budget);
    double loss = 0.0, cost = 0.0;
    for (int64_t i = 0; i < items; ++i) {
      loss += losses[static_cast<size_t>(i * 4 + choice[static_cast<size_t>(i)])];
      cost += costs[static_cast<size_t>(choice[static_cast<size_t>(i)])];
    }
    Best best;
    search(losses, costs, items, 0, 0.0, 0.0, budget, best);
    EXPECT_LE(cost, budget);
    EXPECT_GE(loss, best.loss - 1e-6);
    EXPECT_LE(loss, best.loss + 0.35) << "trial " << trial;  // within about one item's loss
    if (loss <= best.loss + 1e-6) ++exact;
  }
  EXPECT_GE(exact, 25);  // the Lagrangian + greedy fill is exact on most instances
}

TEST(RankAllocationTest, ForbiddenOptionsAndFullBudget) {
  const std::vector<double> costs = {0.0, 5.0, 17.0};
  // item 0 must keep full rank; item 1 is worthless; item 2 matters
  const std::vector<float> losses = {kForbidden, kForbidden, 0.0f, 0.0f, 0.0f, 0.0f, 2.0f, 0.5f, 0.0f};
  EXPECT_EQ(choose_options(losses, 3, costs, 100.0), (std::vector<int32_t>{2, 0, 2}));
  EXPECT_EQ(choose_options(losses, 3, costs, 22.0), (std::vector<int32_t>{2, 0, 1}));
  EXPECT_EQ(choose_options(losses, 3, costs, 17.0), (std::vector<int32_t>{2, 0, 0}));
  EXPECT_THROW(choose_options(losses, 3, costs, 16.0), std::range_error);  // below the forced full rank
}

TEST(RankAllocationTest, BadInputIsRejected) {
  const std::vector<double> costs = {0.0, 5.0};
  EXPECT_THROW(choose_options(std::vector<float>{1.0f}, 1, costs, 10.0), std::invalid_argument);
  EXPECT_THROW(choose_options(std::vector<float>{-1.0f, 0.0f}, 1, costs, 10.0), std::invalid_argument);
  EXPECT_THROW(choose_options(std::vector<float>{kForbidden, kForbidden}, 1, costs, 10.0),
               std::invalid_argument);
  EXPECT_THROW(choose_options(std::vector<float>{std::nanf(""), 0.0f}, 1, costs, 10.0),
               std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink::kvstore
