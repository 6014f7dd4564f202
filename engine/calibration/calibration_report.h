// The held-out measurement of `kvshrink calibrate` (docs/calibration.md), for the whole model:
// the mean relative reconstruction error ||x - P_r x||^2 / ||x||^2 of the per-head and the joint
// bases at a few ranks, and how well the importance predictor's output correlates with the
// measured log-importance. Made by HeldOutErrors::report on every rank.
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::engine {

// Mean over the kv heads whose correlations are defined (heads of them); NaN when heads == 0.
struct ImportanceCorrelation {
  double pearson = 0.0;
  double spearman = 0.0;
  double heads = 0.0;
};

struct CalibrationReport {
  std::vector<int64_t> offsets;      // [o]: pass o placed the held-out chunks at positions from offsets[o]
  std::vector<int32_t> ranks;        // [r]: per-head ranks d, d/2, d/4, ... (at most 5)
  std::vector<int32_t> joint_ranks;  // [R]: joint ranks D, D/2, D/4, D/8 (D = n_kv_heads * d)
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;
  int64_t importance_tokens = 0;  // held-out tokens per kv head the predictor is measured on
  // Sums over held-out tokens and kv heads of the relative error (rows x = 0 left out), and the rows
  // counted. kind: engine::SampleKind; i: 0 = joint keys (in the basis's key space), 1 = values.
  std::vector<float> error_sums;          // [o][kind][layer][r]
  std::vector<float> error_counts;        // [o][kind][layer]
  std::vector<float> joint_error_sums;    // [o][i][layer][R]
  std::vector<float> joint_error_counts;  // [o][i][layer]
  // Per kv head, its Pearson and Spearman correlations of predicted and actual log-importance and
  // 1 where both are defined (zeros where not): [o][pearson, spearman, defined][layer][kv head].
  std::vector<float> correlations;

  // The mean error of `kind` at ranks[r] over held-out tokens, kv heads and the layers
  // [layer_begin, layer_end) of pass o; 0 when no row was counted.
  double mean_error(int64_t o, int kind, int64_t layer_begin, int64_t layer_end, int64_t r) const;
  // The mean error of joint basis i at joint_ranks[r] over the tokens and layers of pass o.
  double mean_joint_error(int64_t o, int i, int64_t r) const;
  ImportanceCorrelation importance_correlation(int64_t o) const;
};

}  // namespace kvshrink::engine
