// Pearson and Spearman correlations (engine/calibration/correlation.h) on hand-checked cases.
#include "engine/calibration/correlation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace kvshrink::engine {
namespace {

TEST(Correlation, PearsonOfLinearPairs) {
  const std::vector<double> a = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(pearson_correlation(a, std::vector<double>{3, 5, 7, 9}), 1.0);
  EXPECT_DOUBLE_EQ(pearson_correlation(a, std::vector<double>{4, 3, 2, 1}), -1.0);
  // Deviations (-1.5, -0.5, 0.5, 1.5) and (-1, 1, -1, 1): 2 / sqrt(5 * 4).
  EXPECT_NEAR(pearson_correlation(a, std::vector<double>{0, 2, 0, 2}), 2.0 / std::sqrt(20.0), 1e-15);
}

TEST(Correlation, UndefinedIsNan) {
  EXPECT_TRUE(std::isnan(pearson_correlation(std::vector<double>{1}, std::vector<double>{2})));
  EXPECT_TRUE(std::isnan(pearson_correlation(std::vector<double>{1, 1, 1}, std::vector<double>{1, 2, 3})));
  EXPECT_TRUE(std::isnan(spearman_correlation(std::vector<double>{}, std::vector<double>{})));
  EXPECT_TRUE(std::isnan(spearman_correlation(std::vector<double>{1, 2}, std::vector<double>{5, 5})));
}

TEST(Correlation, SpearmanUsesRanks) {
  // Monotone but not linear: ranks agree exactly.
  EXPECT_DOUBLE_EQ(spearman_correlation(std::vector<double>{1, 2, 3, 4}, std::vector<double>{1, 8, 27, 1000}),
                   1.0);
  // Ties share their mean rank: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3) give 4.5 / sqrt(4.5 * 5).
  EXPECT_NEAR(spearman_correlation(std::vector<double>{1, 2, 2, 3}, std::vector<double>{1, 2, 3, 4}),
              4.5 / std::sqrt(22.5), 1e-15);
}

}  // namespace
}  // namespace kvshrink::engine
