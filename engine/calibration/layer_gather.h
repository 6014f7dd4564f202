// One layer's keys and values of every kv head side by side, for the joint bases (DynaKV; docs/
// calibration.md): each rank holds its own kv heads, the all-gather puts the layer together.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/calibration/head_samples.h"
#include "engine/model/llama_config.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

// keys(), values(): [n x D] with D = n_kv_heads * d, head 0's d components first. Each rank packs
// its own heads' rows into its piece [keys n x owned * d][values n x owned * d] (pack_head), and
// the all-gather concatenates the ranks' pieces in rank order, which is head order because shards
// are contiguous and ascending (engine::split_range).
class LayerGather {
 public:
  // tp_size ranks; this rank owns `owned` kv heads.
  LayerGather(const LlamaConfig& config, int tp_size, int64_t owned);

  int64_t joint_dim() const { return joint_; }
  int64_t tokens() const { return n_; }
  std::span<const float> keys() const { return keys_; }
  std::span<const float> values() const { return values_; }

  // Owned head h's rows (samples.n tokens, the same for every head) into this rank's piece; keys of
  // `key_kind` (the joint key basis's key space).
  void pack_head(int64_t h, const HeadSamples& samples, SampleKind key_kind);

  // Collective: every rank calls it after packing all its heads; keys() and values() are then set.
  void gather(comm::Communicator& comm);

 private:
  int64_t d_;
  int64_t owned_;
  int64_t joint_;
  int64_t n_ = 0;
  std::vector<int64_t> first_;  // [rank] first kv head
  std::vector<int64_t> heads_;  // [rank] kv heads owned
  std::vector<int64_t> counts_;
  std::vector<float> send_;
  std::vector<float> recv_;
  std::vector<float> keys_;    // [n x D]
  std::vector<float> values_;  // [n x D]
};

}  // namespace kvshrink::engine
