#include "engine/calibration/held_out_errors.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "comm/communicator.h"
#include "engine/calibration/correlation.h"
#include "engine/calibration/importance_fit.h"
#include "engine/compression/kv_basis_file.h"
#include "engine/compression/low_rank_projection.h"

namespace kvshrink::engine {
namespace {

// Adds to sums[i] the relative error of every row x of samples [n x d] at r = ranks[i] in `basis`,
// and the rows counted to count (rows with x = 0 are skipped).
void add_errors(std::span<const float> samples, int64_t n, int64_t d, std::span<const float> basis,
                std::span<const int32_t> ranks, double* sums, double& count) {
  if (n == 0) return;
  const auto errors = relative_errors(samples.data(), n, d, basis, ranks);
  for (int64_t t = 0; t < n; ++t) {
    const float* x = samples.data() + t * d;
    if (std::all_of(x, x + d, [](float v) { return v == 0.0f; })) continue;
    for (size_t i = 0; i < ranks.size(); ++i) sums[i] += errors[static_cast<size_t>(t) * ranks.size() + i];
    count += 1.0;
  }
}

// dim, dim/2, ... while >= 1, at most `most` of them.
std::vector<int32_t> halvings(int64_t dim, size_t most) {
  std::vector<int32_t> ranks;
  for (int64_t r = dim; r >= 1 && ranks.size() < most; r /= 2) ranks.push_back(static_cast<int32_t>(r));
  return ranks;
}

}  // namespace

HeldOutErrors::HeldOutErrors(const FittedBases& fitted, std::vector<int64_t> offsets, int64_t n_kv_heads,
                             int64_t first_head)
    : fitted_(fitted),
      offsets_(std::move(offsets)),
      n_kv_heads_(n_kv_heads),
      first_head_(first_head),
      ranks_(halvings(fitted.head_dim, 5)),
      joint_ranks_(halvings(fitted.joint_dim, 4)) {
  const auto n_offsets = static_cast<int64_t>(offsets_.size());
  const int64_t n_layers = fitted.n_layers;
  sums_.assign(static_cast<size_t>(n_offsets * kSampleKinds * n_layers) * ranks_.size(), 0.0);
  counts_.assign(static_cast<size_t>(n_offsets * kSampleKinds * n_layers), 0.0);
  joint_sums_.assign(static_cast<size_t>(n_offsets * 2 * n_layers) * joint_ranks_.size(), 0.0);
  joint_counts_.assign(static_cast<size_t>(n_offsets * 2 * n_layers), 0.0);
  predicted_.resize(static_cast<size_t>(n_offsets * n_layers * fitted.owned));
  actual_.resize(predicted_.size());
}

void HeldOutErrors::add_head(int64_t o, int64_t layer, int64_t h, const HeadSamples& samples, int64_t begin,
                             int64_t end) {
  const int64_t d = fitted_.head_dim;
  const int64_t n_layers = fitted_.n_layers;
  const auto n_ranks = static_cast<int64_t>(ranks_.size());
  for (int kind = 0; kind < kSampleKinds; ++kind) {
    const int64_t cell = (o * kSampleKinds + kind) * n_layers + layer;
    add_errors(samples.rows[kind], samples.n, d, fitted_.basis(kind, layer, h), ranks_,
               sums_.data() + cell * n_ranks, counts_[static_cast<size_t>(cell)]);
  }
  importance_rows_.clear();
  add_importance_rows(samples, d, begin, end, importance_rows_);
  const int64_t features = fitted_.features();
  const auto cell = static_cast<size_t>((o * n_layers + layer) * fitted_.owned + h);
  for (size_t row = 0; row < importance_rows_.size(); row += static_cast<size_t>(features + 1)) {
    const float* x = importance_rows_.data() + row;
    predicted_[cell].push_back(predict_importance(fitted_.importance_weights(layer, h), x, x + d, d));
    actual_[cell].push_back(x[features]);
  }
}

void HeldOutErrors::add_joint_layer(int64_t o, int64_t layer, const LayerGather& rows) {
  const auto n_joint_ranks = static_cast<int64_t>(joint_ranks_.size());
  for (int i = 0; i < 2; ++i) {
    const int64_t cell = (o * 2 + i) * fitted_.n_layers + layer;
    add_errors(i == 0 ? rows.keys() : rows.values(), rows.tokens(), fitted_.joint_dim,
               fitted_.joint_basis(i, layer), joint_ranks_, joint_sums_.data() + cell * n_joint_ranks,
               joint_counts_[static_cast<size_t>(cell)]);
  }
}

// This rank's kv heads' correlations in the report's layout (zeros elsewhere and where undefined).
std::vector<float> HeldOutErrors::correlations() const {
  const int64_t n_layers = fitted_.n_layers;
  const int64_t all_heads = n_layers * n_kv_heads_;
  std::vector<float> out(offsets_.size() * 3 * static_cast<size_t>(all_heads), 0.0f);
  for (int64_t o = 0; o < static_cast<int64_t>(offsets_.size()); ++o) {
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = 0; h < fitted_.owned; ++h) {
        const auto cell = static_cast<size_t>((o * n_layers + layer) * fitted_.owned + h);
        const double r = pearson_correlation(predicted_[cell], actual_[cell]);
        const double rho = spearman_correlation(predicted_[cell], actual_[cell]);
        if (std::isnan(r) || std::isnan(rho)) continue;
        const auto at = static_cast<size_t>(o * 3 * all_heads + layer * n_kv_heads_ + first_head_ + h);
        out[at] = static_cast<float>(r);
        out[at + static_cast<size_t>(all_heads)] = static_cast<float>(rho);
        out[at + static_cast<size_t>(2 * all_heads)] = 1.0f;
      }
    }
  }
  return out;
}

CalibrationReport HeldOutErrors::report(comm::Communicator& comm, int64_t importance_tokens) const {
  // One all-reduce of [sums, counts, joint sums, joint counts, correlations] as floats.
  std::vector<float> stats(sums_.begin(), sums_.end());
  stats.insert(stats.end(), counts_.begin(), counts_.end());
  stats.insert(stats.end(), joint_sums_.begin(), joint_sums_.end());
  stats.insert(stats.end(), joint_counts_.begin(), joint_counts_.end());
  const auto correlations = this->correlations();
  stats.insert(stats.end(), correlations.begin(), correlations.end());
  comm.all_reduce_sum(stats);

  CalibrationReport report;
  report.offsets = offsets_;
  report.ranks = ranks_;
  report.joint_ranks = joint_ranks_;
  report.n_layers = fitted_.n_layers;
  report.n_kv_heads = n_kv_heads_;
  report.importance_tokens = importance_tokens;
  auto next = stats.begin();
  const auto take = [&](std::vector<float>& out, size_t size) {
    out.assign(next, next + static_cast<ptrdiff_t>(size));
    next += static_cast<ptrdiff_t>(size);
  };
  take(report.error_sums, sums_.size());
  take(report.error_counts, counts_.size());
  take(report.joint_error_sums, joint_sums_.size());
  take(report.joint_error_counts, joint_counts_.size());
  take(report.correlations, correlations.size());
  return report;
}

}  // namespace kvshrink::engine
