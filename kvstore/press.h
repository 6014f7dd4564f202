// A press scores the tokens of one (layer, kv head) of a sequence; it never decides how many to
// keep (that is the allocator's job, kvstore/allocator.h). Scores are per KV head: a group's query
// heads are reduced by the mean. Higher = keep; +infinity = always keep (observation window, sinks).
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "kernels/backend.h"
#include "kvstore/head_cache.h"
#include "kvstore/query_statistics.h"
#include "kvstore/recent_queries.h"

namespace kvshrink::kvstore {

inline constexpr float kAlwaysKeep = std::numeric_limits<float>::infinity();

// What a press may read about one head of one sequence.
struct HeadScoringInput {
  const HeadCache& head;
  const RecentQueries& recent;  // this layer's recent queries; rows hold the rank's q heads
  int64_t first_q_head;         // this kv head's first query head within a row
  int64_t group;                // query heads per kv head
  int64_t next_position;        // position the sequence continues at (= queries seen so far)
  kernels::Backend& backend;    // computes window attention over the head's blocks
  // This layer's query statistics (null or untracked unless the press asks for them) and the RoPE
  // base that rotates queries to future positions.
  const QueryStatistics* query_statistics = nullptr;
  float rope_freq_base = 10000.0f;
  // KVzip: the attention each of the head's tokens received while the model repeated the context
  // ([head.tokens()]; empty unless the press needs_reconstruction()).
  std::span<const float> reconstruction_attention = {};
};

class Press {
 public:
  virtual ~Press() = default;
  virtual std::string_view name() const = 0;
  // Recent queries the press reads (its observation window); 0 when it reads none.
  virtual int64_t query_window() const { return 0; }
  // Whether the store must accumulate the attention each token receives (H2O).
  virtual bool needs_attention_mass() const { return false; }
  // The first position whose queries the store's running query statistics count (Expected
  // Attention); -1 when the press reads none.
  virtual int64_t query_statistics_from() const { return -1; }
  // Whether the compressor must first run the context's reconstruction (KVzip,
  // engine/compression/context_reconstruction.h) for HeadScoringInput::reconstruction_attention.
  virtual bool needs_reconstruction() const { return false; }
  // TOVA: one selection for all heads of a layer; the coordinator averages the heads' scores.
  virtual bool shares_selection_across_heads() const { return false; }
  // scores[i] for token i of the head (scores.size() == head.tokens()).
  virtual void score(const HeadScoringInput& input, std::span<float> scores) const = 0;
};

}  // namespace kvshrink::kvstore
