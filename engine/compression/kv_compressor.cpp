#include "engine/compression/kv_compressor.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "comm/communicator.h"

namespace kvshrink::engine {

KvCompressor::KvCompressor(const LlamaModel& model, comm::Communicator& comm,
                           std::unique_ptr<kvstore::Press> press,
                           std::unique_ptr<kvstore::Allocator> allocator)
    : model_(model), comm_(comm), press_(std::move(press)), allocator_(std::move(allocator)) {}

kvstore::KvStoreOptions KvCompressor::store_options() const {
  return {.query_window = press_->query_window(), .track_attention_mass = press_->needs_attention_mass()};
}

std::vector<std::vector<float>> KvCompressor::score_local(const kvstore::KvStore& kv) const {
  const int64_t group = model_.config().group_size();
  std::vector<std::vector<float>> scores(static_cast<size_t>(kv.n_layers() * kv.owned_kv_heads()));
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      const auto& head = kv.head(layer, h);
      auto& out = scores[static_cast<size_t>(layer * kv.owned_kv_heads() + h)];
      out.resize(static_cast<size_t>(head.tokens()));
      const kvstore::HeadScoringInput input{head, kv.recent_queries(layer), h * group, group,
                                            kv.next_position()};
      press_->score(input, out);
    }
  }
  return scores;
}

// Steps: (1) token counts of every head, all-reduced (max) from the owners; (2) scores all-gathered
// in rank order; (3) rank 0 runs the allocator; (4) the plan is broadcast as
// [kept count per head..., kept indices of head 0, head 1, ...].
KeepPlan KvCompressor::plan(const kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto& config = model_.config();
  const int64_t n_layers = config.n_layers;
  const int64_t n_heads = config.n_head_kv;
  const int tp = comm_.world().size;
  const auto& shard = model_.shard();

  std::vector<int64_t> counts(static_cast<size_t>(n_layers * n_heads), 0);
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    for (int64_t h = 0; h < shard.kv_heads.size(); ++h) {
      counts[layer * n_heads + shard.kv_heads.begin + h] = kv.head(layer, h).tokens();
    }
  }
  comm_.all_reduce_max(counts);
  if (*std::max_element(counts.begin(), counts.end()) <= budget_tokens) return {};

  const auto local = score_local(kv);
  std::vector<float> send;
  for (const auto& head : local) send.insert(send.end(), head.begin(), head.end());
  std::vector<int64_t> rank_floats(static_cast<size_t>(tp), 0);
  for (int r = 0; r < tp; ++r) {
    const auto heads = split_range(n_heads, tp, r);
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = heads.begin; h < heads.end; ++h) rank_floats[r] += counts[layer * n_heads + h];
    }
  }
  std::vector<float> gathered(
      static_cast<size_t>(std::accumulate(rank_floats.begin(), rank_floats.end(), int64_t{0})));
  comm_.all_gather(send, gathered, rank_floats);

  std::vector<int32_t> packed;  // broadcast form of the plan
  if (comm_.world().is_coordinator()) {
    // Rank r's block is [layer][its heads][tokens]; unpack into [layer * n_heads + head].
    std::vector<std::vector<float>> scores(static_cast<size_t>(n_layers * n_heads));
    size_t offset = 0;
    for (int r = 0; r < tp; ++r) {
      const auto heads = split_range(n_heads, tp, r);
      for (int64_t layer = 0; layer < n_layers; ++layer) {
        for (int64_t h = heads.begin; h < heads.end; ++h) {
          const auto n = static_cast<size_t>(counts[layer * n_heads + h]);
          scores[layer * n_heads + h].assign(gathered.begin() + offset, gathered.begin() + offset + n);
          offset += n;
        }
      }
    }
    if (press_->shares_selection_across_heads()) {  // TOVA: one score per token for the whole layer
      for (int64_t layer = 0; layer < n_layers; ++layer) {
        auto& first = scores[layer * n_heads];
        for (int64_t h = 1; h < n_heads; ++h) {
          const auto& other = scores[layer * n_heads + h];
          if (other.size() != first.size())
            throw std::logic_error("shared selection over heads of unequal length");
          for (size_t t = 0; t < first.size(); ++t) first[t] += other[t];
        }
        for (auto& s : first) s /= static_cast<float>(n_heads);
        for (int64_t h = 1; h < n_heads; ++h) scores[layer * n_heads + h] = first;
      }
    }
    const kvstore::AllocationInput input{n_layers, n_heads, scores, budget_tokens};
    const auto budgets = allocator_->head_budgets(input);
    const auto kept = kvstore::select_top(scores, budgets);
    for (const auto& head : kept) packed.push_back(static_cast<int32_t>(head.size()));
    for (const auto& head : kept) packed.insert(packed.end(), head.begin(), head.end());
  }
  comm_.broadcast_vector(packed, 0);
  KeepPlan plan(static_cast<size_t>(n_layers * n_heads));
  size_t offset = plan.size();
  for (size_t h = 0; h < plan.size(); ++h) {
    const auto n = static_cast<size_t>(packed[h]);
    plan[h].assign(packed.begin() + offset, packed.begin() + offset + n);
    offset += n;
  }
  return plan;
}

kvstore::LocalKeepPlan KvCompressor::local_part(const KeepPlan& plan) const {
  const auto& shard = model_.shard();
  const int64_t n_heads = model_.config().n_head_kv;
  kvstore::LocalKeepPlan local;
  for (int64_t layer = 0; layer < model_.config().n_layers; ++layer) {
    for (int64_t h = shard.kv_heads.begin; h < shard.kv_heads.end; ++h)
      local.push_back(plan[layer * n_heads + h]);
  }
  return local;
}

bool KvCompressor::compress(kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto full = plan(kv, budget_tokens);
  if (full.empty()) return false;
  kv.compact(local_part(full));
  return true;
}

kvstore::KvStore KvCompressor::compressed_copy(const kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto full = plan(kv, budget_tokens);
  return full.empty() ? kv.copy() : kv.compacted_copy(local_part(full));
}

}  // namespace kvshrink::engine
