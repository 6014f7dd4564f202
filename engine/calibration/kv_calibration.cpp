#include "engine/calibration/kv_calibration.h"

#include <algorithm>
#include <array>
#include <span>
#include <utility>

#include "comm/communicator.h"
#include "engine/calibration/chunk_sampler.h"
#include "engine/calibration/held_out_errors.h"
#include "engine/calibration/importance_fit.h"
#include "engine/calibration/kv_basis_fit.h"

namespace kvshrink::engine {
namespace {

// A fresh store (attention mass tracked) holding chunk `tokens` prefilled at positions from offset.
kvstore::KvStore prefill_chunk(LlamaModel& model, std::span<const TokenId> tokens, int64_t offset) {
  auto kv = model.make_kv_store(kvstore::KvStoreOptions{.track_attention_mass = true});
  kv.advance(offset);  // RoPE is relative: the same sequence at later positions
  model.forward(tokens, kv, LogitsFor::kLastToken);
  return kv;
}

// Calls visit(kv, chunk index, first position, end position) for every chunk, prefilled at
// positions from offset_of(chunk index).
void for_each_chunk(LlamaModel& model, const TokenChunks& chunks,
                    const std::function<int64_t(size_t)>& offset_of,
                    const std::function<void(const kvstore::KvStore&, size_t, int64_t, int64_t)>& visit) {
  int64_t begin = 0;
  for (size_t c = 0; c < chunks.lengths.size(); ++c) {
    const int64_t length = chunks.lengths[c];
    const int64_t offset = offset_of(c);
    const auto kv = prefill_chunk(
        model, std::span<const TokenId>(chunks.tokens).subspan(static_cast<size_t>(begin), length), offset);
    begin += length;
    visit(kv, c, offset, offset + length);
  }
}

// Collective: the calibration pass (every chunk prefilled and its samples added to the moments),
// then the fit.
FittedBases fit_bases(LlamaModel& model, comm::Communicator& comm, ChunkSampler& sampler,
                      const KvCalibrationInput& input, const KvCalibrationProgress& progress) {
  KvBasisFit fit(model.config(), model.shard().kv_heads.size(), sampler);
  const auto& offsets = input.calib_offsets;
  for_each_chunk(
      model, input.calibration, [&](size_t c) { return offsets[c % offsets.size()]; },
      [&](const kvstore::KvStore& kv, size_t c, int64_t begin, int64_t end) {
        sampler.walk(
            kv, comm,
            [&](int64_t layer, int64_t h, const HeadSamples& s) { fit.add_head(layer, h, s, begin, end); },
            [&](int64_t layer, const LayerGather& rows) { fit.add_joint_layer(layer, rows); });
        if (progress.calibration_chunk)
          progress.calibration_chunk(c, input.calibration.lengths.size(), end - begin);
      });
  return fit.fit(comm);
}

// Collective: the held-out passes of the fitted bases, at positions from 0 and, when > 0, from
// eval_offset (none without held-out text).
CalibrationReport measure_held_out(LlamaModel& model, comm::Communicator& comm, ChunkSampler& sampler,
                                   const FittedBases& fitted, const KvCalibrationInput& input,
                                   const KvCalibrationProgress& progress) {
  std::vector<int64_t> offsets;
  if (input.held_out.total() > 0) {
    offsets.push_back(0);
    if (input.eval_offset > 0) offsets.push_back(input.eval_offset);
  }
  HeldOutErrors errors(fitted, offsets, model.config().n_head_kv, model.shard().kv_heads.begin);
  for (int64_t o = 0; o < static_cast<int64_t>(offsets.size()); ++o) {
    const int64_t offset = offsets[static_cast<size_t>(o)];
    for_each_chunk(
        model, input.held_out, [&](size_t) { return offset; },
        [&](const kvstore::KvStore& kv, size_t, int64_t begin, int64_t end) {
          sampler.walk(
              kv, comm,
              [&](int64_t layer, int64_t h, const HeadSamples& s) {
                errors.add_head(o, layer, h, s, begin, end);
              },
              [&](int64_t layer, const LayerGather& rows) { errors.add_joint_layer(o, layer, rows); });
        });
    if (progress.held_out_pass) progress.held_out_pass(offset);
  }
  return errors.report(comm, importance_tokens(input.held_out.lengths));
}

// The whole model's per-head arrays: every rank fills its own kv heads (zeros elsewhere), then one
// all-reduce each of key basis, value basis, key energy, value energy and importance weights.
KvBasis whole_model_basis(const FittedBases& fitted, const LlamaConfig& config, int64_t first_head,
                          SampleKind key_kind, comm::Communicator& comm) {
  const int64_t d = fitted.head_dim;
  const int64_t features = fitted.features();
  const auto heads = static_cast<size_t>(config.n_layers * config.n_head_kv);
  KvBasis basis;
  const std::array<std::vector<float>*, 2> vectors = {&basis.key_basis, &basis.value_basis};
  const std::array<std::vector<float>*, 2> energies = {&basis.key_energy, &basis.value_energy};
  const std::array<int, 2> kinds = {key_kind, kValueRows};
  for (int i = 0; i < 2; ++i) {
    vectors[i]->assign(heads * static_cast<size_t>(d * d), 0.0f);
    energies[i]->assign(heads * static_cast<size_t>(d), 0.0f);
  }
  basis.importance.assign(heads * static_cast<size_t>(features), 0.0f);
  for (int64_t layer = 0; layer < fitted.n_layers; ++layer) {
    for (int64_t h = 0; h < fitted.owned; ++h) {
      const int64_t local = layer * fitted.owned + h;
      const int64_t global = layer * config.n_head_kv + first_head + h;
      for (int i = 0; i < 2; ++i) {
        std::copy_n(fitted.bases[kinds[i]].begin() + local * d * d, d * d,
                    vectors[i]->begin() + global * d * d);
        std::copy_n(fitted.energies[kinds[i]].begin() + local * d, d, energies[i]->begin() + global * d);
      }
      std::copy_n(fitted.importance.begin() + local * features, features,
                  basis.importance.begin() + global * features);
    }
  }
  for (auto* array : {vectors[0], vectors[1], energies[0], energies[1], &basis.importance}) {
    comm.all_reduce_sum(*array);
  }
  return basis;
}

}  // namespace

std::vector<int64_t> default_calibration_offsets(KeySpace key_space, int64_t chunk, int64_t context) {
  std::vector<int64_t> offsets = {0};
  if (key_space == KeySpace::kPostRope) {
    for (int64_t offset = chunk; offset + chunk <= context; offset += chunk) offsets.push_back(offset);
  }
  return offsets;
}

KvCalibration calibrate_kv_basis(LlamaModel& model, comm::Communicator& comm, const KvCalibrationInput& input,
                                 const KvCalibrationProgress& progress) {
  const auto& config = model.config();
  const SampleKind key_kind = key_sample_kind(input.key_space);
  ChunkSampler sampler(model, key_kind, comm.world().size, comm.world().rank);
  FittedBases fitted = fit_bases(model, comm, sampler, input, progress);
  CalibrationReport report = measure_held_out(model, comm, sampler, fitted, input, progress);

  KvCalibration result{
      .basis = whole_model_basis(fitted, config, model.shard().kv_heads.begin, key_kind, comm),
      .report = std::move(report)};
  KvBasis& basis = result.basis;
  basis.key_space = input.key_space;
  basis.n_layers = config.n_layers;
  basis.n_kv_heads = config.n_head_kv;
  basis.head_dim = config.head_dim;
  basis.tokens = input.calibration.total();
  basis.offsets.assign(input.calib_offsets.begin(), input.calib_offsets.end());
  basis.joint_dim = fitted.joint_dim;
  basis.joint_key_basis = std::move(fitted.joint_bases[0]);
  basis.joint_value_basis = std::move(fitted.joint_bases[1]);
  basis.joint_key_energy = std::move(fitted.joint_energies[0]);
  basis.joint_value_energy = std::move(fitted.joint_energies[1]);
  return result;
}

}  // namespace kvshrink::engine
