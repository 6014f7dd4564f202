// The coordinator's compression step for one sequence (DESIGN.md §1 steps 3-4), collective on all
// ranks: every rank scores its own kv heads with the press, the scores are all-gathered through
// the Communicator, rank 0 runs the allocator over all layers and heads and broadcasts the plan,
// and each rank compacts its shard of the store to its part of the plan.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

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

class KvCompressor {
 public:
  KvCompressor(const LlamaModel& model, comm::Communicator& comm, std::unique_ptr<kvstore::Press> press,
               std::unique_ptr<kvstore::Allocator> allocator);

  const kvstore::Press& press() const { return *press_; }
  const kvstore::Allocator& allocator() const { return *allocator_; }
  // What stores compressed by this press must record (recent queries, attention mass).
  kvstore::KvStoreOptions store_options() const;

  // Collective. The plan keeping budget_tokens per head on average, identical on every rank.
  // Empty when every head already fits its budget (nothing to do).
  KeepPlan plan(const kvstore::KvStore& kv, int64_t budget_tokens);
  // Collective: plan, then compact this rank's heads. Returns false when nothing was to do.
  bool compress(kvstore::KvStore& kv, int64_t budget_tokens);
  // Collective: a compressed copy; kv itself is unchanged (several presses share one prefill).
  kvstore::KvStore compressed_copy(const kvstore::KvStore& kv, int64_t budget_tokens);
  // This rank's heads of a model-wide plan.
  kvstore::LocalKeepPlan local_part(const KeepPlan& plan) const;

 private:
  // Scores of this rank's heads: [layer * owned_kv_heads + local head][token].
  std::vector<std::vector<float>> score_local(const kvstore::KvStore& kv) const;

  const LlamaModel& model_;
  comm::Communicator& comm_;
  std::unique_ptr<kvstore::Press> press_;
  std::unique_ptr<kvstore::Allocator> allocator_;
};

}  // namespace kvshrink::engine
