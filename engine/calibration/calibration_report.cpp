#include "engine/calibration/calibration_report.h"

#include <limits>

#include "engine/calibration/head_samples.h"

namespace kvshrink::engine {

double CalibrationReport::mean_error(int64_t o, int kind, int64_t layer_begin, int64_t layer_end,
                                     int64_t r) const {
  const auto n_ranks = static_cast<int64_t>(ranks.size());
  double sum = 0.0;
  double count = 0.0;
  for (int64_t layer = layer_begin; layer < layer_end; ++layer) {
    const int64_t cell = (o * kSampleKinds + kind) * n_layers + layer;
    sum += error_sums[static_cast<size_t>(cell * n_ranks + r)];
    count += error_counts[static_cast<size_t>(cell)];
  }
  return count > 0 ? sum / count : 0.0;
}

double CalibrationReport::mean_joint_error(int64_t o, int i, int64_t r) const {
  const auto n_joint_ranks = static_cast<int64_t>(joint_ranks.size());
  double sum = 0.0;
  double count = 0.0;
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    const int64_t cell = (o * 2 + i) * n_layers + layer;
    sum += joint_error_sums[static_cast<size_t>(cell * n_joint_ranks + r)];
    count += joint_error_counts[static_cast<size_t>(cell)];
  }
  return count > 0 ? sum / count : 0.0;
}

ImportanceCorrelation CalibrationReport::importance_correlation(int64_t o) const {
  const int64_t all_heads = n_layers * n_kv_heads;
  const size_t block = static_cast<size_t>(o * 3 * all_heads);
  double r = 0.0;
  double rho = 0.0;
  double defined = 0.0;
  for (int64_t head = 0; head < all_heads; ++head) {
    const size_t at = block + static_cast<size_t>(head);
    r += correlations[at];
    rho += correlations[at + static_cast<size_t>(all_heads)];
    defined += correlations[at + static_cast<size_t>(2 * all_heads)];
  }
  if (defined == 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {.pearson = nan, .spearman = nan, .heads = 0.0};
  }
  return {.pearson = r / defined, .spearman = rho / defined, .heads = defined};
}

}  // namespace kvshrink::engine
