// The coordinator's compression step for one sequence (DESIGN.md §1 steps 3-4), collective on all
// ranks: every rank scores its own kv heads with the press, the scores are all-gathered through
// the Communicator, rank 0 runs the allocator over all layers and heads and broadcasts the plan,
// and each rank compacts its shard of the store to its part of the plan.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/compression/dimension_method.h"
#include "engine/model/llama_model.h"
#include "kvstore/allocator.h"
#include "kvstore/kv_store.h"
#include "kvstore/press.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

// Kept token indices of every head of the model: kept[layer * n_kv_heads + head], ascending.
using KeepPlan = std::vector<std::vector<int32_t>>;

// A compression step for every head: the full-dimension tokens kept and, for dimension-level
// methods, each kept token's rank (ranks[h][i] for kept[h][i]; empty = every token at full
// dimension). Empty kept = nothing to do.
struct CompressionPlan {
  KeepPlan kept;
  RankPlan ranks;
  bool empty() const { return kept.empty(); }
};

class KvCompressor;

// One store to plan in plan_all: its compressor and budget; plan_all fills plan or error.
struct PlanJob {
  KvCompressor* compressor;
  const kvstore::KvStore* kv;
  int64_t budget_tokens;
  CompressionPlan plan;  // empty: nothing to do
  std::string error;     // the same on every rank: a budget the method cannot meet
};

// Collective: the plans of several stores (several sequences due in the same step, each with its
// own compressor) in one exchange: one all-reduce of their token counts, one all-gather of their
// scores and features, rank 0 solves each, one broadcast of the plans. A job's error fails that
// job only.
void plan_all(std::span<PlanJob> jobs, comm::Communicator& comm);

class KvCompressor {
 public:
  // press: may be null (DynaKV alone keeps every token); allocator: null when the dimension method
  // decides evictions itself (MixedDimKV) or nothing is evicted; dimensions: null for token eviction.
  // chunk_size > 1: the press's scores are averaged over chunks of that many consecutive tokens
  // before the allocator (or the dimension solve) sees them (kvstore::chunk_scores).
  // repeat_instruction: the tokens a press that needs_reconstruction() (KVzip) prefills before the
  // context's copy (context_reconstruction.h).
  KvCompressor(LlamaModel& model, comm::Communicator& comm, std::unique_ptr<kvstore::Press> press,
               std::unique_ptr<kvstore::Allocator> allocator,
               std::unique_ptr<DimensionMethod> dimensions = nullptr, int64_t chunk_size = 1,
               std::vector<TokenId> repeat_instruction = {});

  const kvstore::Press* press() const { return press_.get(); }
  const kvstore::Allocator* allocator() const { return allocator_.get(); }
  const DimensionMethod* dimensions() const { return dimensions_.get(); }
  int64_t chunk_size() const { return chunk_size_; }
  // DynaKV alone: nothing is evicted, tokens only lose dimensions.
  bool keeps_every_token() const { return dimensions_ && !press_; }
  // What stores compressed by this press must record (recent queries, attention mass).
  kvstore::KvStoreOptions store_options() const;

  // Collective. The plan keeping budget_tokens per head on average (token-equivalents: bytes of that
  // many full-dimension tokens), identical on every rank. Empty when every head already fits its
  // budget (nothing to do; token eviction only). Errors (a budget the candidate ranks cannot meet)
  // are a comm::JobError on every rank.
  CompressionPlan plan(const kvstore::KvStore& kv, int64_t budget_tokens);
  // Collective: plan, then compact this rank's heads (and move tokens into rank buckets). Returns
  // false when nothing was to do.
  bool compress(kvstore::KvStore& kv, int64_t budget_tokens);
  // Collective: a compressed copy; kv itself is unchanged (several presses share one prefill).
  kvstore::KvStore compressed_copy(const kvstore::KvStore& kv, int64_t budget_tokens);
  // Collective (all ranks, same plan): the copy of kv under a plan made for it (plan or plan_all).
  kvstore::KvStore compressed_copy(const kvstore::KvStore& kv, const CompressionPlan& plan) const;
  // Collective when the press needs_reconstruction() (KVzip runs the model): the press's scores of
  // this rank's heads as plan() computes them, before chunking: [layer * owned_kv_heads + local
  // head][token].
  std::vector<std::vector<float>> head_scores(const kvstore::KvStore& kv) const;
  // This rank's heads of a model-wide plan.
  kvstore::LocalKeepPlan local_part(const KeepPlan& plan) const;
  // Collective (all ranks, same plan): compacts this rank's heads (and moves tokens into rank
  // buckets). Does nothing for an empty plan.
  void apply(kvstore::KvStore& kv, const CompressionPlan& plan) const;

 private:
  friend void plan_all(std::span<PlanJob> jobs, comm::Communicator& comm);
  // The phases of plan_all (kv_compressor.cpp).
  std::vector<int64_t> local_counts(const kvstore::KvStore& kv) const;
  size_t local_counts_size() const {
    return static_cast<size_t>(2 * model_.config().n_layers * model_.config().n_head_kv);
  }
  int64_t token_width() const;
  std::vector<float> local_inputs(const kvstore::KvStore& kv) const;
  std::vector<int64_t> rank_floats(std::span<const int64_t> counts) const;
  std::vector<int32_t> solve(std::span<const int64_t> counts_and_bytes, std::span<const float> gathered,
                             int64_t next_position, int64_t budget_tokens) const;
  CompressionPlan unpack(std::span<const int32_t> packed) const;

  // Scores of this rank's heads: [layer * owned_kv_heads + local head][token].
  std::vector<std::vector<float>> score_local(const kvstore::KvStore& kv) const;

  LlamaModel& model_;  // non-const: KVzip's scoring runs a prefill
  comm::Communicator& comm_;
  std::unique_ptr<kvstore::Press> press_;
  std::unique_ptr<kvstore::Allocator> allocator_;
  std::unique_ptr<DimensionMethod> dimensions_;
  int64_t chunk_size_ = 1;
  std::vector<TokenId> repeat_instruction_;
  // KVzip's reconstruction attention of one store, kept within one plan_all (score_local).
  struct ReconstructionMemo {
    const kvstore::KvStore* kv = nullptr;
    std::vector<std::vector<float>> attention;
  };
  mutable ReconstructionMemo reconstruction_memo_;
};

}  // namespace kvshrink::engine
