// Dimension-level compression (issue 5; kv-methods.md §8-9): which rank each token of each head
// keeps, rank 0 meaning evicted. Two kinds:
//   MixedDimKV  one multiple-choice knapsack over every (layer, head, token) and the candidate
//               ranks plus 0, loss = importance x head weight x reconstruction error, importance =
//               the press's (SnapKV) window score; MixedDimKV-H weighs heads by the HeadKV profile.
//   DynaKV      per head, each token's rank from its importance as predicted from its own key and
//               value by the calibrated linear predictor (query-agnostic, so decode tokens can be
//               ranked too), loss = importance x reconstruction error, no eviction; with a press in
//               front (snapkv+dynakv) the press first evicts to budget / rate tokens.
// The reconstruction error of a token at rank r is ||k - P_r k||^2/||k||^2 + ||v - P_r v||^2/||v||^2
// in the head's calibrated basis (engine/compression/low_rank_projection.h).
//
// Each rank computes the per-token inputs of its own heads (local_features); the coordinator gathers
// them with the press scores and solves (solve); each rank applies its part (apply).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/compression/low_rank_projection.h"
#include "kernels/backend.h"
#include "kvstore/head_basis.h"
#include "kvstore/kv_store.h"

namespace kvshrink::engine {

enum class DimensionKind { kMixedDim, kDynaKv };

struct DimensionConfig {
  DimensionKind kind = DimensionKind::kMixedDim;
  std::vector<int32_t> ranks;        // candidate ranks, ascending, each in [1, head_dim]
  double rate = 15.0 / 32.0;         // snapkv+dynakv: mean share of dimensions the kept tokens keep
  int64_t window = 32;               // DynaKV without a press: the most recent tokens keep the top rank
  std::vector<double> head_weights;  // [n_layers * n_kv_heads] MixedDimKV-H; empty = every head 1
  // DynaKV with the joint basis of a layer's kv heads: one eviction and one rank per token for all
  // heads of the layer, ranks counted in the joint latent (candidate rank x n_kv_heads).
  bool joint = false;
};

// Ranks of every kept token: ranks[layer * n_kv_heads + head][i] for the head's kept token i.
using RankPlan = std::vector<std::vector<int32_t>>;

// What the coordinator solves from, for every head of the model ([layer * n_kv_heads + head]).
struct DimensionInput {
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t head_dim = 0;
  int64_t budget_tokens = 0;                   // mean token-equivalents per head (a full-dimension token = 1)
  int64_t next_position = 0;                   // positions of the sequence so far
  std::span<const std::vector<float>> scores;  // the press's; empty per head without a press
  std::span<const std::vector<float>> features;  // local_features() of the head's owner
  // DynaKV: the tokens the press kept (all when there is no press), ascending
  std::span<const std::vector<int32_t>> kept;
  // Bytes each head already holds in low-rank segments (decode-time DynaKV)
  std::span<const int64_t> low_rank_bytes;
  kernels::KvDtype dtype = kernels::KvDtype::kF16;  // the store's: what a token at each rank costs
};

class DimensionMethod {
 public:
  // bases and predictors of this rank's heads [layer * owned + head]; predictors
  // [2 * head_dim + 1] each (DynaKV only); joint bases [layer] when config.joint (then this rank
  // owns every kv head).
  DimensionMethod(DimensionConfig config, std::vector<std::shared_ptr<const kvstore::HeadBasis>> bases,
                  std::vector<std::vector<float>> predictors,
                  std::vector<std::shared_ptr<const JointBasis>> joint_bases = {});

  const DimensionConfig& config() const { return config_; }
  // Options per token: rank 0 (MixedDimKV only) then the candidate ranks (joint: x n_kv_heads).
  const std::vector<int32_t>& options() const { return options_; }
  // Floats gathered per token: the error of every option, then (DynaKV) the predicted importance.
  int64_t features_per_token() const;

  // Per owned head, [tokens x features_per_token()] for its full-dimension tokens.
  std::vector<std::vector<float>> local_features(const kvstore::KvStore& kv, kernels::Backend& backend) const;
  // Coordinator: kept tokens (ascending) and their ranks for every head. Throws std::range_error
  // when the budget is below what the candidate set can hold.
  void solve(const DimensionInput& input, std::vector<std::vector<int32_t>>& kept, RankPlan& ranks) const;
  // Tokens per head the press keeps before DynaKV ranks them (snapkv+dynakv).
  int64_t eviction_budget(int64_t budget_tokens) const;
  // This rank's heads: a copy of each head with the planned tokens at their ranks.
  void apply(kvstore::KvStore& kv, const kvstore::LocalKeepPlan& kept, const kvstore::LocalKeepPlan& ranks,
             kernels::Backend& backend) const;

 private:
  std::vector<float> predicted_importance(const kvstore::HeadCache& head, size_t index,
                                          kernels::Backend& backend) const;
  std::vector<float> pack_features(std::span<const float> errors, std::span<const float> importance) const;

  DimensionConfig config_;
  std::vector<int32_t> options_;
  std::vector<std::shared_ptr<const kvstore::HeadBasis>> bases_;
  std::vector<std::vector<float>> predictors_;
  std::vector<std::shared_ptr<const JointBasis>> joint_bases_;
};

}  // namespace kvshrink::engine
