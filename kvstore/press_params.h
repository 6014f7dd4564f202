// Parameters of every press and allocator, with the defaults of shared/research/kv-methods.md.
// The registry (kvstore/press_registry.h) starts from each method's own defaults; flags override.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvshrink::kvstore {

enum class PoolType { kAverage, kMax };

struct PressParams {
  int64_t window = 32;      // observation window w (always kept)
  int64_t pool_kernel = 7;  // 1-D pooling kernel of the window scores (1 = none)
  PoolType pool_type = PoolType::kMax;
  int64_t sinks = 4;               // StreamingLLM attention sinks; Expected Attention's n_sink
  int64_t future_positions = 512;  // Expected Attention: the queries to come, averaged over this many
  double alpha = 0.2;              // AdaKV floor: share of each head's uniform budget it keeps
  double pyramid_beta = 20.0;      // PyramidKV: top layer keeps b / beta
  double head_beta = 1.01;         // HeadKV: every head keeps at least b - b / beta
  double r_max = 10.0;             // DynamicKV: a layer keeps at most r_max * b
  std::string head_profile;        // HeadKV, MixedDimKV-H: head-importance profile file (profile-heads)
  // Dimension-level methods (MixedDimKV, DynaKV):
  std::vector<int32_t> ranks;      // candidate ranks, each dividing head_dim; empty = d, d/2, d/4, d/8
  double dyna_rate = 15.0 / 32.0;  // snapkv+dynakv: mean share of dimensions kept tokens keep
  std::string kv_basis;            // calibrated basis file (calibrate); "" = next to the model
  bool joint_basis = false;        // DynaKV: one basis across a layer's kv heads (one rank holds them all)
  // ChunkKV-style selection: candidates are scored by the mean over chunks of chunk_size
  // consecutive tokens and kept whole (kvstore/allocator.h, chunk_scores); 1 = per token.
  int64_t chunk_size = 1;
};

}  // namespace kvshrink::kvstore
