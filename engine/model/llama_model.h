// The Llama transformer forward pass on one tensor-parallel rank (shapes in llama_model.cpp).
// Every rank calls forward_step() with the same batch; activations are replicated, each rank
// computes its own heads and FFN columns, and the two row-parallel products per layer are summed
// with one all-reduce each. Logits come back complete on every rank.
//
// A step is a batch of sequences, each contributing rows (a prefill chunk or one decode token):
// all rows of the step go through each GEMM together; attention runs per (sequence, own kv head)
// over that sequence's segments, every pair of the step in a few batched backend calls (the CPU
// backend spreads the decode ones over its compute threads).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/model/llama_config.h"
#include "engine/model/llama_weights.h"
#include "engine/model/tensor_parallel_split.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "kvstore/kv_store.h"

namespace kvshrink::comm {
class Communicator;
}
namespace kvshrink::engine {

enum class LogitsFor { kLastToken, kEveryToken, kNone };

// One sequence's rows in a step: `tokens` go at positions kv->next_position() onward and their
// K/V are appended to kv.
struct SequenceRows {
  kvstore::KvStore* kv;
  std::span<const TokenId> tokens;
  LogitsFor logits = LogitsFor::kLastToken;
};

class LlamaModel {
 public:
  // Loads this rank's shard of the weights (rank and size from comm.world()).
  // Its KV stores hold kv_dtype elements.
  LlamaModel(const GgufFile& file, comm::Communicator& comm, kernels::Backend& backend,
             int64_t max_batch = 512, kernels::KvDtype kv_dtype = kernels::KvDtype::kF16);

  const LlamaConfig& config() const { return config_; }
  const ShardLayout& shard() const { return shard_; }
  uint64_t weight_bytes() const { return weights_.bytes(); }
  int64_t max_batch() const { return max_batch_; }
  kernels::KvDtype kv_dtype() const { return kv_dtype_; }
  kernels::Backend& backend() const { return backend_; }

  // Wall time spent in attention over the KV store (all layers and heads of this rank) since the
  // last reset: the part of a decode step that compression shrinks.
  double attention_seconds() const { return attention_seconds_; }
  void reset_attention_seconds() { attention_seconds_ = 0.0; }

  // An empty KV store for one sequence, holding this rank's kv heads as kv_dtype(), its tokens in
  // blocks of `pool` (null: a pool of its own, unlimited).
  kvstore::KvStore make_kv_store(const kvstore::KvStoreOptions& options = {},
                                 std::shared_ptr<kvstore::KvMemoryPool> pool = nullptr) const;

  // Runs one step (total rows <= max_batch, each sequence at most once, no empty one). Returns the
  // logits asked for, [rows x vocab_size] in batch order: its last row (kLastToken), every row
  // (kEveryToken) or none per sequence. Throws std::invalid_argument for a token outside the
  // vocabulary and kvstore::KvMemoryExhausted when the pool cannot hold the new tokens (the
  // batch's stores are then partly appended: the caller frees or recomputes them).
  std::vector<float> forward_step(std::span<const SequenceRows> batch);
  // One sequence, in steps of max_batch tokens.
  std::vector<float> forward(std::span<const TokenId> tokens, kvstore::KvStore& kv, LogitsFor which);

 private:
  // Backend::merge_attention of part b into part a of one head, rows as in attn_out_.
  struct PartMerge {
    float* out;
    int64_t out_stride;
    float* lse;
    const float* out_b;
    int64_t out_b_stride;
    const float* lse_b;
    int64_t m;
  };
  // Vectors handed out one at a time that keep their buffers while more are handed out (each is
  // its own vector), reused from one layer to the next.
  template <class T>
  class ScratchSlots {
   public:
    void reset() { used_ = 0; }
    std::vector<T>& next(size_t size = 0) {
      if (used_ == slots_.size()) slots_.emplace_back();
      auto& slot = slots_[used_++];
      slot.resize(size);
      return slot;
    }

   private:
    std::vector<std::vector<T>> slots_;
    size_t used_ = 0;
  };

  // Where the parts of one head's attention go: the first writes the head's rows of attn_out_ (and
  // its lse, when there are more parts); each later one writes scratch that is merged in after.
  struct HeadParts {
    float* out;
    int64_t out_stride;
    float* lse;  // [m x group]; null for a head of one part
    int64_t m;
    bool first = true;
  };

  void check_batch(std::span<const SequenceRows> batch) const;
  void attention_block(int64_t layer, std::span<const SequenceRows> batch, int64_t m);
  void record_query_statistics(int64_t layer, std::span<const SequenceRows> batch);
  void append_step_kv(int64_t layer, std::span<const SequenceRows> batch);
  void plan_attention(int64_t layer, std::span<const SequenceRows> batch);
  // mass_max: the store keeps each token's largest probability as its mass (kvstore::KvStoreOptions).
  void plan_head(int64_t row0, int64_t m, int64_t local_head, const kvstore::HeadCache& head, bool mass_max);
  void plan_low_rank(const kvstore::HeadCache& head, const kernels::HeadAttention& args, HeadParts& parts);
  void plan_segment(const kvstore::HeadSegment& segment, kernels::HeadAttention args,
                    std::vector<kernels::HeadAttention>& calls);
  void next_part(HeadParts& parts, float*& out, int64_t& out_stride, float*& lse);
  void run_attention_plan();
  void ffn_block(int64_t layer, int64_t m);
  void logits(const float* hidden_rows, int64_t rows, float* out);

  LlamaConfig config_;
  ShardLayout shard_;
  LlamaWeights weights_;
  comm::Communicator& comm_;
  kernels::Backend& backend_;
  int64_t max_batch_;
  kernels::KvDtype kv_dtype_;
  double attention_seconds_ = 0.0;

  // One layer's attention over the KV store, planned for every (sequence, own kv head) of the step
  // (plan_head) and run as a few batched backend calls (run_attention_plan):
  std::vector<kernels::HeadAttention> dense_;        // over each full-dimension segment
  std::vector<kernels::LowRankAttention> low_rank_;  // over each basis's low-rank tokens of a head
  std::vector<PartMerge> merges_;                    // then, in order, each later part into the first
  std::vector<kernels::HeadAttention> mass_;         // then the mass pass of multi-part heads
  ScratchSlots<kernels::KvBlockView> views_;         // one segment's blocks per call
  ScratchSlots<kernels::LowRankBucket> buckets_;     // one head's buckets of a basis per call
  ScratchSlots<float> parts_;                        // a multi-part head's lse [m x group], later
                                                     // parts' out [m x group x head_dim] and lse
  // Per-chunk activations, m <= max_batch tokens (row-major, one row per token):
  std::vector<float> hidden_;       // [m x n_embd] residual stream (replicated)
  std::vector<float> normed_;       // [m x n_embd]
  std::vector<float> q_;            // [m x own q heads x head_dim]
  std::vector<float> k_;            // [m x own kv heads x head_dim]
  std::vector<float> v_;            // [m x own kv heads x head_dim]
  std::vector<float> attn_out_;     // [m x own q heads x head_dim]
  std::vector<float> gate_;         // [m x own ffn]
  std::vector<float> up_;           // [m x own ffn]
  std::vector<float> partial_;      // [m x n_embd] row-parallel partial sum, all-reduced
  std::vector<int32_t> positions_;  // [m]
  std::vector<TokenId> tokens_;     // [m]
};

}  // namespace kvshrink::engine
