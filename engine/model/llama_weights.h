// The weights one tensor-parallel rank holds: its shard of every matrix, kept in the GGUF's
// packing (e.g. Q4_1), plus the replicated norms (f32) and token-embedding table.
//
//   column-parallel (rows split):    wq, wk, wv (own heads), w_gate, w_up (own FFN range),
//                                    output (own vocab range)
//   row-parallel (columns split):    wo (own query heads' inputs), w_down (own FFN range)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/model/llama_config.h"
#include "engine/model/tensor_parallel_split.h"
#include "kernels/tensor_type.h"
#include "kernels/weight.h"

namespace kvshrink::engine {

class GgufFile;

struct LlamaLayerWeights {
  std::vector<float> attn_norm;  // [n_embd]
  std::vector<float> ffn_norm;   // [n_embd]
  kernels::Weight wq;            // [q_heads * head_dim x n_embd]
  kernels::Weight wk;            // [kv_heads * head_dim x n_embd]
  kernels::Weight wv;            // [kv_heads * head_dim x n_embd]
  kernels::Weight wo;            // [n_embd x q_heads * head_dim]
  kernels::Weight w_gate;        // [ffn x n_embd]
  kernels::Weight w_up;          // [ffn x n_embd]
  kernels::Weight w_down;        // [n_embd x ffn]
};

struct LlamaWeights {
  kernels::Weight token_embedding;  // [vocab x n_embd]; a lookup dequantizes one row
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> output_norm;  // [n_embd]
  kernels::Weight output;          // [vocab shard x n_embd]; token_embd when tied

  uint64_t bytes() const;

  // Loads this rank's shard, checking every tensor's presence, shape and type.
  static LlamaWeights load(const GgufFile& file, const LlamaConfig& config, const ShardLayout& shard);
};

}  // namespace kvshrink::engine
