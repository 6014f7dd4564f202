#include "engine/compression/dimension_method.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/compression/kv_basis_file.h"
#include "engine/compression/low_rank_projection.h"
#include "kvstore/press.h"
#include "kvstore/rank_allocation.h"

namespace kvshrink::engine {

namespace {
constexpr float kForbidden = std::numeric_limits<float>::infinity();

// Loss of option j (of n_options) for a token that must keep the top rank.
float top_rank_only(int64_t j, int64_t n_options) {
  return j + 1 == n_options ? 0.0f : kForbidden;
}
}  // namespace

DimensionMethod::DimensionMethod(DimensionConfig config,
                                 std::vector<std::shared_ptr<const kvstore::HeadBasis>> bases,
                                 std::vector<std::vector<float>> predictors,
                                 std::vector<std::shared_ptr<const JointBasis>> joint_bases)
    : config_(std::move(config)),
      bases_(std::move(bases)),
      predictors_(std::move(predictors)),
      joint_bases_(std::move(joint_bases)) {
  if (config_.ranks.empty()) throw std::invalid_argument("dimension method: no candidate ranks");
  if (config_.joint && (config_.kind != DimensionKind::kDynaKv || joint_bases_.empty())) {
    throw std::invalid_argument("the joint basis is for dynakv, with a joint basis per layer");
  }
  if (config_.kind == DimensionKind::kMixedDim) options_.push_back(0);
  const int64_t scale = config_.joint ? static_cast<int64_t>(joint_bases_[0]->heads.size()) : 1;
  for (const int32_t r : config_.ranks) options_.push_back(static_cast<int32_t>(r * scale));
  if (config_.kind == DimensionKind::kDynaKv && predictors_.size() != bases_.size()) {
    throw std::invalid_argument("dynakv: a predictor per head is needed");
  }
}

int64_t DimensionMethod::features_per_token() const {
  return static_cast<int64_t>(options_.size()) + (config_.kind == DimensionKind::kDynaKv ? 1 : 0);
}

int64_t DimensionMethod::eviction_budget(int64_t budget_tokens) const {
  return static_cast<int64_t>(std::ceil(static_cast<double>(budget_tokens) / config_.rate));
}

// exp(predicted log-importance) of every full-dimension token of the head at `index`
// [layer * owned + head], from its pre-RoPE key and its value.
std::vector<float> DimensionMethod::predicted_importance(const kvstore::HeadCache& head, size_t index,
                                                         kernels::Backend& backend) const {
  const int64_t d = head.head_dim();
  std::vector<float> out;
  out.reserve(static_cast<size_t>(head.tokens()));
  for (const auto& segment : head.segments()) {
    std::vector<float> keys = segment.keys();
    const std::vector<float> values = segment.values();
    const std::vector<int32_t> positions = segment.positions();
    unrotate_keys(keys.data(), positions.data(), segment.tokens(), d, bases_[index]->rope_base, backend);
    for (int64_t i = 0; i < segment.tokens(); ++i) {
      const float log_importance =
          predict_importance(predictors_[index], keys.data() + i * d, values.data() + i * d, d);
      out.push_back(std::exp(std::clamp(log_importance, -30.0f, 30.0f)));
    }
  }
  return out;
}

// [tokens x features_per_token()]: each token's errors at the options, then (DynaKV) its importance.
std::vector<float> DimensionMethod::pack_features(std::span<const float> errors,
                                                  std::span<const float> importance) const {
  const auto n_options = static_cast<int64_t>(options_.size());
  const int64_t width = features_per_token();
  const int64_t n = static_cast<int64_t>(errors.size()) / n_options;
  std::vector<float> out(static_cast<size_t>(n * width));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(errors.begin() + t * n_options, n_options, out.begin() + t * width);
    if (!importance.empty())
      out[static_cast<size_t>(t * width + n_options)] = importance[static_cast<size_t>(t)];
  }
  return out;
}

std::vector<std::vector<float>> DimensionMethod::local_features(const kvstore::KvStore& kv,
                                                                kernels::Backend& backend) const {
  const int64_t owned = kv.owned_kv_heads();
  const bool dynakv = config_.kind == DimensionKind::kDynaKv;
  std::vector<std::vector<float>> out(static_cast<size_t>(kv.n_layers() * owned));
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    if (config_.joint) {
      // The layer's features, the same for every head: errors in the joint basis, importance the
      // mean over the heads' predictions.
      std::vector<const kvstore::HeadCache*> heads;
      for (int64_t h = 0; h < owned; ++h) heads.push_back(&kv.head(layer, h));
      const auto errors =
          joint_reconstruction_errors(heads, *joint_bases_[static_cast<size_t>(layer)], options_, backend);
      std::vector<float> importance(static_cast<size_t>(heads[0]->tokens()), 0.0f);
      for (int64_t h = 0; h < owned; ++h) {
        const auto head = predicted_importance(*heads[static_cast<size_t>(h)],
                                               static_cast<size_t>(layer * owned + h), backend);
        for (size_t t = 0; t < importance.size(); ++t) importance[t] += head[t] / static_cast<float>(owned);
      }
      const auto layer_features = pack_features(errors, importance);
      for (int64_t h = 0; h < owned; ++h) out[static_cast<size_t>(layer * owned + h)] = layer_features;
      continue;
    }
    for (int64_t h = 0; h < owned; ++h) {
      const auto index = static_cast<size_t>(layer * owned + h);
      const auto& head = kv.head(layer, h);
      const auto errors = reconstruction_errors(head, *bases_[index], options_, backend);
      out[index] =
          pack_features(errors, dynakv ? predicted_importance(head, index, backend) : std::vector<float>{});
    }
  }
  return out;
}

void DimensionMethod::solve(const DimensionInput& in, std::vector<std::vector<int32_t>>& kept,
                            RankPlan& ranks) const {
  const int64_t heads = in.n_layers * in.n_heads;
  const int64_t width = features_per_token();
  const auto n_options = static_cast<int64_t>(options_.size());
  std::vector<double> costs;
  for (const int32_t r : options_) costs.push_back(kvstore::rank_cost(r, in.dtype));
  const double full_cost = kvstore::rank_cost(in.head_dim, in.dtype);
  kept.assign(static_cast<size_t>(heads), {});
  ranks.assign(static_cast<size_t>(heads), {});

  if (config_.kind == DimensionKind::kMixedDim) {
    // One knapsack over every token of every head.
    std::vector<float> losses;
    std::vector<std::pair<int32_t, int32_t>> owner;  // (head, token) of each item
    for (int64_t h = 0; h < heads; ++h) {
      const auto& scores = in.scores[static_cast<size_t>(h)];
      const auto& features = in.features[static_cast<size_t>(h)];
      const double weight = config_.head_weights.empty() ? 1.0 : config_.head_weights[static_cast<size_t>(h)];
      for (size_t t = 0; t < scores.size(); ++t) {
        owner.emplace_back(static_cast<int32_t>(h), static_cast<int32_t>(t));
        for (int64_t j = 0; j < n_options; ++j) {
          const float error = features[t * static_cast<size_t>(width) + static_cast<size_t>(j)];
          if (scores[t] == kvstore::kAlwaysKeep) {  // the observation window keeps the top rank
            losses.push_back(top_rank_only(j, n_options));
          } else {
            losses.push_back(static_cast<float>(weight * std::max(0.0f, scores[t]) * error));
          }
        }
      }
    }
    const double budget = static_cast<double>(heads * in.budget_tokens) * full_cost;
    std::vector<int32_t> choice;
    try {
      choice = kvstore::choose_options(losses, static_cast<int64_t>(owner.size()), costs, budget);
    } catch (const std::range_error& e) {
      throw std::range_error(
          fmt::format("mixeddimkv cannot meet the budget of {} tokens per head: the observation window it "
                      "keeps at the top "
                      "rank needs more ({}); raise the budget or lower --window",
                      in.budget_tokens, e.what()));
    }
    for (size_t i = 0; i < owner.size(); ++i) {
      const int32_t rank = options_[static_cast<size_t>(choice[i])];
      if (rank == 0) continue;
      kept[static_cast<size_t>(owner[i].first)].push_back(owner[i].second);
      ranks[static_cast<size_t>(owner[i].first)].push_back(rank);
    }
    return;
  }

  // DynaKV: per head (joint: per layer, head 0 standing for all), ranks for the tokens the press
  // kept, at the budget's share of dimensions.
  const double share =
      static_cast<double>(in.budget_tokens) / static_cast<double>(std::max<int64_t>(1, in.next_position));
  const int64_t group = config_.joint ? in.n_heads : 1;  // heads that share one plan
  for (int64_t h = 0; h < heads; h += group) {
    const auto& features = in.features[static_cast<size_t>(h)];
    const auto& scores = in.scores[static_cast<size_t>(h)];
    const auto& head_kept = in.kept[static_cast<size_t>(h)];
    const auto n_tokens = static_cast<int64_t>(features.size()) / width;
    std::vector<float> losses;
    for (const int32_t t : head_kept) {
      const bool top = scores.empty() ? t >= n_tokens - config_.window
                                      : scores[static_cast<size_t>(t)] == kvstore::kAlwaysKeep;
      const float importance = features[static_cast<size_t>(t * width + n_options)];
      for (int64_t j = 0; j < n_options; ++j) {
        const float error = features[static_cast<size_t>(t * width + j)];
        losses.push_back(top ? top_rank_only(j, n_options) : importance * error);
      }
    }
    // snapkv+dynakv: the head's token-equivalent budget; dynakv alone: the budget's share of every
    // position's full bytes, less what the head's earlier low-rank tokens hold
    double budget = 0.0;
    for (int64_t g = h; g < h + group; ++g) {
      budget += scores.empty() ? share * static_cast<double>(in.next_position) * full_cost -
                                     static_cast<double>(in.low_rank_bytes[static_cast<size_t>(g)])
                               : static_cast<double>(in.budget_tokens) * full_cost;
    }
    std::vector<int32_t> choice;
    try {
      choice = kvstore::choose_options(losses, static_cast<int64_t>(head_kept.size()), costs, budget);
    } catch (const std::range_error&) {
      throw std::range_error(fmt::format(
          "dynakv cannot meet the budget: every kept token holds at least rank {} of {} ({:.1f}% of its "
          "bytes); "
          "raise the budget, add a lower --ranks candidate, or evict first with --press snapkv+dynakv",
          options_.front(), in.head_dim, 100.0 * costs.front() / full_cost));
    }
    for (int64_t g = h; g < h + group; ++g) {
      kept[static_cast<size_t>(g)] = head_kept;
      for (const auto j : choice) ranks[static_cast<size_t>(g)].push_back(options_[static_cast<size_t>(j)]);
    }
  }
}

void DimensionMethod::apply(kvstore::KvStore& kv, const kvstore::LocalKeepPlan& kept,
                            const kvstore::LocalKeepPlan& ranks, kernels::Backend& backend) const {
  const int64_t owned = kv.owned_kv_heads();
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    if (config_.joint) {
      std::vector<const kvstore::HeadCache*> heads;
      for (int64_t h = 0; h < owned; ++h) heads.push_back(&kv.head(layer, h));
      const auto index = static_cast<size_t>(layer * owned);
      auto copies = joint_dimension_copy(heads, kept[index], ranks[index],
                                         *joint_bases_[static_cast<size_t>(layer)], backend);
      for (int64_t h = 0; h < owned; ++h) kv.head(layer, h) = std::move(copies[static_cast<size_t>(h)]);
      continue;
    }
    for (int64_t h = 0; h < owned; ++h) {
      const auto index = static_cast<size_t>(layer * owned + h);
      kv.head(layer, h) =
          mixed_dimension_copy(kv.head(layer, h), kept[index], ranks[index], bases_[index], backend);
    }
  }
}

}  // namespace kvshrink::engine
