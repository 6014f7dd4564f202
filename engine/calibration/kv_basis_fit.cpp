#include "engine/calibration/kv_basis_fit.h"

#include <algorithm>

#include "comm/communicator.h"
#include "engine/calibration/importance_fit.h"

namespace kvshrink::engine {

std::span<const float> FittedBases::basis(int kind, int64_t layer, int64_t h) const {
  return std::span<const float>(bases[kind])
      .subspan(static_cast<size_t>((layer * owned + h) * head_dim * head_dim),
               static_cast<size_t>(head_dim * head_dim));
}

std::span<const float> FittedBases::importance_weights(int64_t layer, int64_t h) const {
  return std::span<const float>(importance)
      .subspan(static_cast<size_t>((layer * owned + h) * features()), static_cast<size_t>(features()));
}

std::span<const float> FittedBases::joint_basis(int i, int64_t layer) const {
  return std::span<const float>(joint_bases[i])
      .subspan(static_cast<size_t>(layer * joint_dim * joint_dim),
               static_cast<size_t>(joint_dim * joint_dim));
}

KvBasisFit::KvBasisFit(const LlamaConfig& config, int64_t owned, const ChunkSampler& sampler)
    : n_layers_(config.n_layers), owned_(owned), d_(config.head_dim), joint_dim_(sampler.joint_dim()) {
  for (int64_t layer = 0; layer < n_layers_; ++layer) joint_here_.push_back(sampler.owns_joint_layer(layer));
  for (int64_t i = 0; i < n_layers_ * owned_ * kSampleKinds; ++i) moments_.emplace_back(d_);
  for (int64_t i = 0; i < n_layers_ * owned_; ++i) importance_moments_.emplace_back(2 * d_ + 2);
  for (int64_t i = 0; i < 2 * n_layers_; ++i) {
    joint_moments_.emplace_back(joint_here_[static_cast<size_t>(i / 2)] ? joint_dim_ : 1);
  }
}

SecondMoment& KvBasisFit::moment(int64_t layer, int64_t h, int kind) {
  return moments_[static_cast<size_t>((layer * owned_ + h) * kSampleKinds + kind)];
}

void KvBasisFit::add_head(int64_t layer, int64_t h, const HeadSamples& samples, int64_t begin, int64_t end) {
  for (int kind = 0; kind < kSampleKinds; ++kind) moment(layer, h, kind).add(samples.rows[kind], samples.n);
  importance_rows_.clear();
  add_importance_rows(samples, d_, begin, end, importance_rows_);
  importance_moments_[static_cast<size_t>(layer * owned_ + h)].add(
      importance_rows_, static_cast<int64_t>(importance_rows_.size()) / (2 * d_ + 2));
}

void KvBasisFit::add_joint_layer(int64_t layer, const LayerGather& rows) {
  joint_moments_[static_cast<size_t>(2 * layer)].add(rows.keys(), rows.tokens());
  joint_moments_[static_cast<size_t>(2 * layer + 1)].add(rows.values(), rows.tokens());
}

void KvBasisFit::fit_heads(FittedBases& fitted) const {
  const int64_t d = d_;
  for (int kind = 0; kind < kSampleKinds; ++kind) {
    fitted.bases[kind].resize(static_cast<size_t>(n_layers_ * owned_ * d * d));
    fitted.energies[kind].resize(static_cast<size_t>(n_layers_ * owned_ * d));
    for (int64_t block = 0; block < n_layers_ * owned_; ++block) {
      const auto result =
          symmetric_eigen(moments_[static_cast<size_t>(block * kSampleKinds + kind)].matrix(), d);
      std::copy(result.components.begin(), result.components.end(),
                fitted.bases[kind].begin() + block * d * d);
      std::copy(result.eigenvalues.begin(), result.eigenvalues.end(),
                fitted.energies[kind].begin() + block * d);
    }
  }
  const int64_t features = fitted.features();
  fitted.importance.resize(static_cast<size_t>(n_layers_ * owned_ * features));
  for (int64_t i = 0; i < n_layers_ * owned_; ++i) {
    const auto w = fit_importance(importance_moments_[static_cast<size_t>(i)]);
    std::copy(w.begin(), w.end(), fitted.importance.begin() + i * features);
  }
}

void KvBasisFit::fit_joint(FittedBases& fitted, comm::Communicator& comm) const {
  const int64_t dim = joint_dim_;
  for (int i = 0; i < 2; ++i) {
    fitted.joint_bases[i].assign(static_cast<size_t>(n_layers_ * dim * dim), 0.0f);
    fitted.joint_energies[i].assign(static_cast<size_t>(n_layers_ * dim), 0.0f);
  }
  for (int64_t layer = 0; layer < n_layers_; ++layer) {
    if (!joint_here_[static_cast<size_t>(layer)]) continue;
    for (int i = 0; i < 2; ++i) {
      const auto result = symmetric_eigen(joint_moments_[static_cast<size_t>(2 * layer + i)].matrix(), dim);
      std::copy(result.components.begin(), result.components.end(),
                fitted.joint_bases[i].begin() + layer * dim * dim);
      std::copy(result.eigenvalues.begin(), result.eigenvalues.end(),
                fitted.joint_energies[i].begin() + layer * dim);
    }
  }
  for (auto& array : fitted.joint_bases) comm.all_reduce_sum(array);
  for (auto& array : fitted.joint_energies) comm.all_reduce_sum(array);
}

FittedBases KvBasisFit::fit(comm::Communicator& comm) const {
  FittedBases fitted;
  fitted.n_layers = n_layers_;
  fitted.owned = owned_;
  fitted.head_dim = d_;
  fitted.joint_dim = joint_dim_;
  fit_heads(fitted);
  fit_joint(fitted, comm);
  return fitted;
}

}  // namespace kvshrink::engine
