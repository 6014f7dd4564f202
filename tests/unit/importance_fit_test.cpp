// The importance predictor's fit (engine/calibration/importance_fit.h): which tokens of a chunk are
// fitted, the rows' features and log-importance target, and the ridge fit recovering a linear law.
#include "engine/calibration/importance_fit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/compression/kv_basis_file.h"

namespace kvshrink::engine {
namespace {

TEST(ImportanceFit, TokensLeaveOutSinksAndRecent) {
  // 100 - 4 - 32 = 64; chunks of 36 or fewer tokens add none; 37 adds 1.
  EXPECT_EQ(importance_tokens(std::vector<int64_t>{100, 30, 36, 37}), 65);
  EXPECT_EQ(importance_tokens(std::vector<int64_t>{}), 0);
}

TEST(ImportanceFit, RowsHoldKeyValueOneAndLogImportance) {
  // d = 2, a chunk prefilled at positions [10, 50): positions 14..17 are fitted (>= 4 after the
  // first, > 32 before the end).
  const int64_t d = 2;
  HeadSamples samples;
  samples.n = 40;
  for (int32_t t = 0; t < 40; ++t) {
    samples.positions.push_back(10 + t);
    samples.mass.push_back(0.5f * static_cast<float>(t + 1));
    for (int64_t i = 0; i < d; ++i) {
      samples.rows[kKeyPostRope].push_back(-1.0f);
      samples.rows[kKeyPreRope].push_back(static_cast<float>(t));
      samples.rows[kValueRows].push_back(static_cast<float>(100 + t));
    }
  }
  std::vector<float> rows;
  add_importance_rows(samples, d, 10, 50, rows);
  ASSERT_EQ(rows.size(), static_cast<size_t>(4 * (2 * d + 2)));
  for (int64_t r = 0; r < 4; ++r) {
    const float* row = rows.data() + r * (2 * d + 2);
    const int64_t t = 4 + r;
    EXPECT_EQ(row[0], static_cast<float>(t));
    EXPECT_EQ(row[1], static_cast<float>(t));
    EXPECT_EQ(row[2], static_cast<float>(100 + t));
    EXPECT_EQ(row[3], static_cast<float>(100 + t));
    EXPECT_EQ(row[4], 1.0f);
    const double seen = static_cast<double>(50 - (10 + t));
    EXPECT_FLOAT_EQ(row[5], static_cast<float>(std::log(0.5 * static_cast<double>(t + 1) / seen + 1e-6)));
  }
}

TEST(ImportanceFit, RidgeRecoversALinearLaw) {
  // y = w . [key, value, 1] exactly on random features: the small ridge leaves w nearly unchanged,
  // and predict_importance reads the weights back in the same order.
  const int64_t d = 3;
  const int64_t p = 2 * d + 1;
  const std::vector<float> w = {0.5f, -1.0f, 0.25f, 2.0f, 0.0f, -0.75f, -3.0f};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  SecondMoment moment(p + 1);
  std::vector<float> row(static_cast<size_t>(p + 1));
  for (int t = 0; t < 2000; ++t) {
    double y = 0.0;
    for (int64_t i = 0; i < p; ++i) {
      row[static_cast<size_t>(i)] = i + 1 == p ? 1.0f : normal(rng);
      y += static_cast<double>(w[static_cast<size_t>(i)]) * row[static_cast<size_t>(i)];
    }
    row[static_cast<size_t>(p)] = static_cast<float>(y);
    moment.add(row, 1);
  }
  const auto fitted = fit_importance(moment);
  ASSERT_EQ(fitted.size(), static_cast<size_t>(p));
  for (int64_t i = 0; i < p; ++i)
    EXPECT_NEAR(fitted[static_cast<size_t>(i)], w[static_cast<size_t>(i)], 1e-2) << i;
  const float key[d] = {1.0f, 0.0f, 0.0f};
  const float value[d] = {1.0f, 0.0f, 0.0f};
  EXPECT_NEAR(predict_importance(fitted, key, value, d), 0.5f + 2.0f - 3.0f, 2e-2);
}

}  // namespace
}  // namespace kvshrink::engine
