// Walks one prefilled calibration chunk for the fit and the held-out measurement
// (docs/calibration.md): every owned (layer, kv head)'s samples, and each layer's joint rows.
//
// Tensor parallel: every rank prefills the same chunk into its own kv heads; the joint rows of
// every layer are all-gathered (LayerGather), and the joint work of layer l is done by rank
// l % ranks, which alone sees that layer's joint rows.
#pragma once

#include <cstdint>
#include <functional>

#include "engine/calibration/head_samples.h"
#include "engine/calibration/layer_gather.h"
#include "engine/model/llama_model.h"
#include "kvstore/kv_store.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

class ChunkSampler {
 public:
  // Calls on_head(layer, owned head h, its samples).
  using HeadVisitor = std::function<void(int64_t layer, int64_t h, const HeadSamples& samples)>;
  // Calls on_joint_layer(layer, the layer's rows of every kv head).
  using JointVisitor = std::function<void(int64_t layer, const LayerGather& rows)>;

  // The joint keys are of `key_kind`; tp_size ranks, this one `rank`.
  ChunkSampler(const LlamaModel& model, SampleKind key_kind, int tp_size, int rank);

  int64_t joint_dim() const { return rows_.joint_dim(); }
  // Whether this rank does layer's joint work: layer % ranks == rank.
  bool owns_joint_layer(int64_t layer) const { return layer % tp_size_ == rank_; }

  // Collective (one all-gather per layer): for layer 0, 1, ...: on_head for every owned kv head of
  // kv, then on_joint_layer where owns_joint_layer(layer).
  void walk(const kvstore::KvStore& kv, comm::Communicator& comm, const HeadVisitor& on_head,
            const JointVisitor& on_joint_layer);

 private:
  kernels::Backend& backend_;
  float rope_base_;
  SampleKind key_kind_;
  int tp_size_;
  int rank_;
  HeadSamples samples_;
  LayerGather rows_;
};

}  // namespace kvshrink::engine
