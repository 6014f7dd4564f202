// CalibrationReport's means (engine/calibration/calibration_report.h) over a hand-made report:
// error sums over their row counts, per layer range and joint, and the importance correlations
// averaged over the kv heads where they are defined.
#include "engine/calibration/calibration_report.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/calibration/head_samples.h"

namespace kvshrink::engine {
namespace {

// One offset, 2 layers, 2 kv heads, per-head ranks {2, 1}, joint ranks {4, 2}.
CalibrationReport small_report() {
  CalibrationReport report;
  report.offsets = {0};
  report.ranks = {2, 1};
  report.joint_ranks = {4, 2};
  report.n_layers = 2;
  report.n_kv_heads = 2;
  // [o][kind][layer][r]: kind k, layer l, rank r holds 10 k + 2 l + r; counts [o][kind][layer] 1 + l.
  for (int kind = 0; kind < kSampleKinds; ++kind) {
    for (int layer = 0; layer < 2; ++layer) {
      for (int r = 0; r < 2; ++r) report.error_sums.push_back(static_cast<float>(10 * kind + 2 * layer + r));
      report.error_counts.push_back(static_cast<float>(1 + layer));
    }
  }
  // [o][i][layer][R] = i + layer + R; counts 2 each.
  for (int i = 0; i < 2; ++i) {
    for (int layer = 0; layer < 2; ++layer) {
      for (int r = 0; r < 2; ++r) report.joint_error_sums.push_back(static_cast<float>(i + layer + r));
      report.joint_error_counts.push_back(2.0f);
    }
  }
  // [o][pearson, spearman, defined][layer x head]: heads 0 and 3 defined.
  report.correlations = {0.5f, 0, 0, 0.7f, 0.25f, 0, 0, 0.35f, 1, 0, 0, 1};
  return report;
}

TEST(CalibrationReport, MeanErrorOverRowsOfTheLayers) {
  const auto report = small_report();
  // Kind 2, rank 1: layer 0 sums 21 over 1 row, layer 1 sums 23 over 2 rows.
  EXPECT_DOUBLE_EQ(report.mean_error(0, kValueRows, 0, 2, 1), (21.0 + 23.0) / 3.0);
  EXPECT_DOUBLE_EQ(report.mean_error(0, kValueRows, 1, 2, 1), 23.0 / 2.0);
  EXPECT_DOUBLE_EQ(report.mean_error(0, kKeyPostRope, 0, 1, 0), 0.0);
  EXPECT_DOUBLE_EQ(report.mean_joint_error(0, 1, 1), (2.0 + 3.0) / 4.0);
}

TEST(CalibrationReport, NoRowsIsZero) {
  auto report = small_report();
  for (auto& count : report.error_counts) count = 0.0f;
  EXPECT_EQ(report.mean_error(0, kKeyPreRope, 0, 2, 0), 0.0);
}

TEST(CalibrationReport, ImportanceCorrelationOverDefinedHeads) {
  auto report = small_report();
  const auto correlation = report.importance_correlation(0);
  EXPECT_DOUBLE_EQ(correlation.heads, 2.0);
  EXPECT_NEAR(correlation.pearson, 0.6, 1e-7);
  EXPECT_NEAR(correlation.spearman, 0.3, 1e-7);
  report.correlations.assign(report.correlations.size(), 0.0f);
  const auto undefined = report.importance_correlation(0);
  EXPECT_EQ(undefined.heads, 0.0);
  EXPECT_TRUE(std::isnan(undefined.pearson));
}

}  // namespace
}  // namespace kvshrink::engine
