// The held-out measurement of the fitted bases and importance predictor (docs/calibration.md):
// over held-out chunks prefilled at positions from offsets[o], each rank sums the relative errors
// ||x - P_r x||^2 / ||x||^2 (engine::relative_errors) of its kv heads' samples in their bases, and
// of the joint rows of the layers whose joint work it does in the joint bases, and keeps its kv
// heads' predicted and actual log-importance; report() sums them over the ranks.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/calibration/calibration_report.h"
#include "engine/calibration/kv_basis_fit.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

class HeldOutErrors {
 public:
  // `fitted` must outlive this. This rank's kv heads are first_head.. of the model's n_kv_heads.
  // Ranks measured: per head d, d/2, ... (at most 5); joint D, D/2, D/4, D/8.
  HeldOutErrors(const FittedBases& fitted, std::vector<int64_t> offsets, int64_t n_kv_heads,
                int64_t first_head);

  // Adds owned head h's samples of a chunk of pass o, prefilled at positions [begin, end).
  void add_head(int64_t o, int64_t layer, int64_t h, const HeadSamples& samples, int64_t begin, int64_t end);
  // Adds a layer's joint rows of pass o; only on the rank that owns the layer's joint work.
  void add_joint_layer(int64_t o, int64_t layer, const LayerGather& rows);

  // Collective (one all-reduce): the whole model's figures. importance_tokens: held-out tokens per
  // kv head the predictor was measured on (engine::importance_tokens), for the report.
  CalibrationReport report(comm::Communicator& comm, int64_t importance_tokens) const;

 private:
  std::vector<float> correlations() const;

  const FittedBases& fitted_;
  std::vector<int64_t> offsets_;
  int64_t n_kv_heads_;
  int64_t first_head_;
  std::vector<int32_t> ranks_;
  std::vector<int32_t> joint_ranks_;
  std::vector<double> sums_;          // [o][kind][layer][r]
  std::vector<double> counts_;        // [o][kind][layer]
  std::vector<double> joint_sums_;    // [o][i][layer][R]
  std::vector<double> joint_counts_;  // [o][i][layer]
  // Predicted and actual log-importance of the measured tokens, [o][layer][owned head][token].
  std::vector<std::vector<double>> predicted_;
  std::vector<std::vector<double>> actual_;
  std::vector<float> importance_rows_;  // scratch for add_head
};

}  // namespace kvshrink::engine
