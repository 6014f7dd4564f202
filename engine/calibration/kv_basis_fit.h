// The fit of `kvshrink calibrate` (docs/calibration.md): over the calibration chunks each rank
// accumulates, in double precision, the uncentered second moments (engine::SecondMoment) of its own
// kv heads' samples of every kind [d x d], of their importance rows [(p + 1) x (p + 1)]
// (importance_fit.h), and of the joint keys and values [D x D] of the layers whose joint work it
// does (ChunkSampler::owns_joint_layer); fit() turns them into energy-ordered bases
// (engine::symmetric_eigen) and importance weights.
//
// d = head_dim, H = this rank's kv heads, L = n_layers, D = n_kv_heads * d, p = 2d + 1.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/calibration/chunk_sampler.h"
#include "engine/compression/pca.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

// This rank's kv heads' bases and importance weights, and the whole model's joint bases. Joint index
// i: 0 = keys (in the key space of the sampler's key kind), 1 = values.
struct FittedBases {
  int64_t n_layers = 0;
  int64_t owned = 0;  // H
  int64_t head_dim = 0;
  int64_t joint_dim = 0;
  std::array<std::vector<float>, kSampleKinds> bases;     // [kind][L][H][d x d], vector k contiguous
  std::array<std::vector<float>, kSampleKinds> energies;  // [kind][L][H][d], descending
  std::vector<float> importance;                          // [L][H][p]: predict_importance weights
  std::array<std::vector<float>, 2> joint_bases;          // [i][L][D x D], vector k contiguous
  std::array<std::vector<float>, 2> joint_energies;       // [i][L][D], descending

  int64_t features() const { return 2 * head_dim + 1; }
  std::span<const float> basis(int kind, int64_t layer, int64_t h) const;     // [d x d]
  std::span<const float> importance_weights(int64_t layer, int64_t h) const;  // [p]
  std::span<const float> joint_basis(int i, int64_t layer) const;             // [D x D]
};

class KvBasisFit {
 public:
  // The sampler says which layers' joint moments this rank keeps.
  KvBasisFit(const LlamaConfig& config, int64_t owned, const ChunkSampler& sampler);

  // Adds owned head h's samples of a chunk prefilled at positions [begin, end) (mass tracked).
  void add_head(int64_t layer, int64_t h, const HeadSamples& samples, int64_t begin, int64_t end);
  // Adds a layer's joint rows; only on the rank that owns the layer's joint work.
  void add_joint_layer(int64_t layer, const LayerGather& rows);

  // Collective (an all-reduce per joint array, zeros where another rank owns the layer). Throws
  // std::runtime_error when a head or layer got no sample, or LAPACK fails.
  FittedBases fit(comm::Communicator& comm) const;

 private:
  SecondMoment& moment(int64_t layer, int64_t h, int kind);
  void fit_heads(FittedBases& fitted) const;
  void fit_joint(FittedBases& fitted, comm::Communicator& comm) const;

  int64_t n_layers_;
  int64_t owned_;
  int64_t d_;
  int64_t joint_dim_;
  std::vector<bool> joint_here_;                  // [L]
  std::vector<SecondMoment> moments_;             // [L][H][kind], d
  std::vector<SecondMoment> importance_moments_;  // [L][H], p + 1
  std::vector<SecondMoment> joint_moments_;       // [L][i], D where joint_here_, else 1
  std::vector<float> importance_rows_;            // scratch for add_head
};

}  // namespace kvshrink::engine
