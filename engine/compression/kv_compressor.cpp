#include "engine/compression/kv_compressor.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"

namespace kvshrink::engine {

KvCompressor::KvCompressor(const LlamaModel& model, comm::Communicator& comm,
                           std::unique_ptr<kvstore::Press> press,
                           std::unique_ptr<kvstore::Allocator> allocator,
                           std::unique_ptr<DimensionMethod> dimensions)
    : model_(model),
      comm_(comm),
      press_(std::move(press)),
      allocator_(std::move(allocator)),
      dimensions_(std::move(dimensions)) {
  if (!dimensions_ && (!press_ || !allocator_)) throw std::invalid_argument("token eviction needs a press and an allocator");
}

kvstore::KvStoreOptions KvCompressor::store_options() const {
  if (!press_) return {};
  return {.query_window = press_->query_window(), .track_attention_mass = press_->needs_attention_mass()};
}

std::vector<std::vector<float>> KvCompressor::score_local(const kvstore::KvStore& kv) const {
  const int64_t group = model_.config().group_size();
  std::vector<std::vector<float>> scores(static_cast<size_t>(kv.n_layers() * kv.owned_kv_heads()));
  if (!press_) return scores;
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

namespace {

// Every head's indices 0..n-1.
std::vector<std::vector<int32_t>> all_tokens(std::span<const int64_t> counts) {
  std::vector<std::vector<int32_t>> out(counts.size());
  for (size_t h = 0; h < counts.size(); ++h) {
    out[h].resize(static_cast<size_t>(counts[h]));
    std::iota(out[h].begin(), out[h].end(), 0);
  }
  return out;
}

}  // namespace

// Steps: (1) token counts of every head, all-reduced (max) from the owners; (2) per-token inputs
// all-gathered in rank order: the press's scores, then (dimension methods) the reconstruction errors
// and importances; (3) rank 0 runs the allocator or the dimension method; (4) the plan is broadcast
// as [kept count per head..., kept indices of head 0, head 1, ..., their ranks in the same order].
CompressionPlan KvCompressor::plan(const kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto& config = model_.config();
  const int64_t n_layers = config.n_layers;
  const int64_t n_heads = config.n_head_kv;
  const int tp = comm_.world().size;
  const auto& shard = model_.shard();

  // counts [heads]: full-dimension tokens; then [heads] words held in low-rank segments
  std::vector<int64_t> counts(static_cast<size_t>(2 * n_layers * n_heads), 0);
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    for (int64_t h = 0; h < shard.kv_heads.size(); ++h) {
      const auto& head = kv.head(layer, h);
      const auto index = static_cast<size_t>(layer * n_heads + shard.kv_heads.begin + h);
      counts[index] = head.tokens();
      for (const auto& segment : head.low_rank()) {
        counts[counts.size() / 2 + index] += static_cast<int64_t>(segment.bytes_held() / sizeof(float));
      }
    }
  }
  comm_.all_reduce_max(counts);
  const std::vector<int64_t> low_rank_words(counts.begin() + static_cast<ptrdiff_t>(counts.size() / 2), counts.end());
  counts.resize(counts.size() / 2);
  if (!dimensions_ && *std::max_element(counts.begin(), counts.end()) <= budget_tokens) return {};

  // Per-token floats gathered: the score (with a press), then the dimension features.
  const int64_t score_width = press_ ? 1 : 0;
  const int64_t feature_width = dimensions_ ? dimensions_->features_per_token() : 0;
  const int64_t width = score_width + feature_width;
  const auto local_scores = score_local(kv);
  const auto local_features =
      dimensions_ ? dimensions_->local_features(kv, model_.backend()) : std::vector<std::vector<float>>{};
  std::vector<float> send;
  for (size_t h = 0; h < local_scores.size(); ++h) {
    send.insert(send.end(), local_scores[h].begin(), local_scores[h].end());
    if (dimensions_) send.insert(send.end(), local_features[h].begin(), local_features[h].end());
  }
  std::vector<int64_t> rank_floats(static_cast<size_t>(tp), 0);
  for (int r = 0; r < tp; ++r) {
    const auto heads = split_range(n_heads, tp, r);
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = heads.begin; h < heads.end; ++h) rank_floats[r] += counts[layer * n_heads + h] * width;
    }
  }
  std::vector<float> gathered(
      static_cast<size_t>(std::accumulate(rank_floats.begin(), rank_floats.end(), int64_t{0})));
  comm_.all_gather(send, gathered, rank_floats);

  std::vector<int32_t> packed;  // broadcast form of the plan
  std::string error;
  if (comm_.world().is_coordinator()) {
    try {
      // Rank r's block is [layer][its heads][scores, features]; unpack into [layer * n_heads + head].
      std::vector<std::vector<float>> scores(static_cast<size_t>(n_layers * n_heads));
      std::vector<std::vector<float>> features(scores.size());
      size_t offset = 0;
      for (int r = 0; r < tp; ++r) {
        const auto heads = split_range(n_heads, tp, r);
        for (int64_t layer = 0; layer < n_layers; ++layer) {
          for (int64_t h = heads.begin; h < heads.end; ++h) {
            const auto n = static_cast<size_t>(counts[layer * n_heads + h]);
            auto at = gathered.begin() + static_cast<ptrdiff_t>(offset);
            scores[layer * n_heads + h].assign(at, at + static_cast<ptrdiff_t>(n * score_width));
            at += static_cast<ptrdiff_t>(n * score_width);
            features[layer * n_heads + h].assign(at, at + static_cast<ptrdiff_t>(n * feature_width));
            offset += n * static_cast<size_t>(width);
          }
        }
      }
      // TOVA, joint-basis DynaKV: one score per token for the whole layer
      if (press_ && (press_->shares_selection_across_heads() || (dimensions_ && dimensions_->config().joint))) {
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
      std::vector<std::vector<int32_t>> kept;
      RankPlan ranks;
      if (!dimensions_ || dimensions_->config().kind == DimensionKind::kDynaKv) {
        if (allocator_) {  // token eviction (snapkv+dynakv: to budget / rate tokens first)
          const int64_t eviction_budget = dimensions_ ? dimensions_->eviction_budget(budget_tokens) : budget_tokens;
          const kvstore::AllocationInput input{n_layers, n_heads, scores, eviction_budget};
          kept = kvstore::select_top(scores, allocator_->head_budgets(input));
        } else {
          kept = all_tokens(counts);
        }
      }
      if (dimensions_) {
        const DimensionInput input{n_layers, n_heads,  config.head_dim, budget_tokens, kv.next_position(),
                                   scores,   features, kept,            low_rank_words};
        std::vector<std::vector<int32_t>> dimension_kept;
        dimensions_->solve(input, dimension_kept, ranks);
        kept = std::move(dimension_kept);
      }
      for (const auto& head : kept) packed.push_back(static_cast<int32_t>(head.size()));
      for (const auto& head : kept) packed.insert(packed.end(), head.begin(), head.end());
      for (const auto& head : ranks) packed.insert(packed.end(), head.begin(), head.end());
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm_, error.empty(), error);
  comm_.broadcast_vector(packed, 0);
  CompressionPlan plan;
  plan.kept.resize(static_cast<size_t>(n_layers * n_heads));
  size_t offset = plan.kept.size();
  for (size_t h = 0; h < plan.kept.size(); ++h) {
    const auto n = static_cast<size_t>(packed[h]);
    plan.kept[h].assign(packed.begin() + offset, packed.begin() + offset + n);
    offset += n;
  }
  if (dimensions_) {
    plan.ranks.resize(plan.kept.size());
    for (size_t h = 0; h < plan.kept.size(); ++h) {
      const auto n = plan.kept[h].size();
      plan.ranks[h].assign(packed.begin() + offset, packed.begin() + offset + n);
      offset += n;
    }
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
  if (full.ranks.empty()) {
    kv.compact(local_part(full.kept));
  } else {
    dimensions_->apply(kv, local_part(full.kept), local_part(full.ranks), model_.backend());
  }
  return true;
}

kvstore::KvStore KvCompressor::compressed_copy(const kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto full = plan(kv, budget_tokens);
  if (full.empty()) return kv.copy();
  if (full.ranks.empty()) return kv.compacted_copy(local_part(full.kept));
  auto copy = kv.copy();
  dimensions_->apply(copy, local_part(full.kept), local_part(full.ranks), model_.backend());
  return copy;
}

}  // namespace kvshrink::engine
