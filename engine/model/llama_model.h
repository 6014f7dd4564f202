// The Llama transformer forward pass on one tensor-parallel rank (shapes in llama_model.cpp).
// Every rank calls forward() with the same tokens; activations are replicated, each rank computes
// its own heads and FFN columns, and the two row-parallel products per layer are summed with one
// all-reduce each. Logits come back complete on every rank.
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

enum class LogitsFor { kLastToken, kEveryToken };

class LlamaModel {
 public:
  // Loads this rank's shard of the weights (rank and size from comm.world()).
  LlamaModel(const GgufFile& file, comm::Communicator& comm, kernels::Backend& backend,
             int64_t max_batch = 512);

  const LlamaConfig& config() const { return config_; }
  const ShardLayout& shard() const { return shard_; }
  uint64_t weight_bytes() const { return weights_.bytes(); }
  int64_t max_batch() const { return max_batch_; }
  kernels::Backend& backend() const { return backend_; }

  // Wall time spent in attention over the KV store (all layers and heads of this rank) since the
  // last reset: the part of a decode step that compression shrinks.
  double attention_seconds() const { return attention_seconds_; }
  void reset_attention_seconds() { attention_seconds_ = 0.0; }

  // An empty KV store for one sequence, holding this rank's kv heads.
  kvstore::KvStore make_kv_store(const kvstore::KvStoreOptions& options = {},
                                 std::shared_ptr<kvstore::KvMemoryPool> pool = nullptr) const;

  // Runs `tokens` at positions kv.next_position() onward (in chunks of max_batch), appends their
  // K/V to kv, and returns logits [rows x vocab_size]: rows = 1 (last token) or tokens.size().
  std::vector<float> forward(std::span<const TokenId> tokens, kvstore::KvStore& kv, LogitsFor which);

 private:
  void forward_chunk(std::span<const TokenId> tokens, kvstore::KvStore& kv);
  void embed(std::span<const TokenId> tokens, float* x) const;
  void attention_block(int64_t layer, int64_t m, kvstore::KvStore& kv);
  void attend_head(int64_t m, int64_t local_head, kvstore::HeadCache& head);
  void ffn_block(int64_t layer, int64_t m);
  void logits(const float* hidden_rows, int64_t rows, float* out);

  LlamaConfig config_;
  ShardLayout shard_;
  LlamaWeights weights_;
  comm::Communicator& comm_;
  kernels::Backend& backend_;
  int64_t max_batch_;
  double attention_seconds_ = 0.0;

  std::vector<kernels::LowRankBucket> buckets_;  // scratch: one head's low-rank buckets
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
  // Attention over a head's second and later segments, merged into attn_out_:
  std::vector<float> segment_out_;  // [m x group x head_dim]
  std::vector<float> lse_;          // [m x group] log-denominators so far
  std::vector<float> segment_lse_;  // [m x group]
};

}  // namespace kvshrink::engine
