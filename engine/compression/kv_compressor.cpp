#include "engine/compression/kv_compressor.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string_view>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/context_reconstruction.h"

namespace kvshrink::engine {

KvCompressor::KvCompressor(LlamaModel& model, comm::Communicator& comm, std::unique_ptr<kvstore::Press> press,
                           std::unique_ptr<kvstore::Allocator> allocator,
                           std::unique_ptr<DimensionMethod> dimensions, int64_t chunk_size,
                           std::vector<TokenId> repeat_instruction)
    : model_(model),
      comm_(comm),
      press_(std::move(press)),
      allocator_(std::move(allocator)),
      dimensions_(std::move(dimensions)),
      chunk_size_(chunk_size),
      repeat_instruction_(std::move(repeat_instruction)) {
  if (!dimensions_ && (!press_ || !allocator_))
    throw std::invalid_argument("token eviction needs a press and an allocator");
  if (chunk_size_ < 1) throw std::invalid_argument("the chunk size must be >= 1");
}

kvstore::KvStoreOptions KvCompressor::store_options() const {
  if (!press_) return {};
  return {.query_window = press_->query_window(),
          .track_attention_mass = press_->needs_attention_mass(),
          .query_statistics_from = press_->query_statistics_from(),
          .keep_token_ids = press_->needs_reconstruction()};
}

std::vector<std::vector<float>> KvCompressor::score_local(const kvstore::KvStore& kv) const {
  const int64_t group = model_.config().group_size();
  std::vector<std::vector<float>> scores(static_cast<size_t>(kv.n_layers() * kv.owned_kv_heads()));
  if (!press_) return scores;
  if (press_->needs_reconstruction() && reconstruction_memo_.kv != &kv) {
    reconstruction_memo_ = {&kv, reconstruction_attention(model_, kv, repeat_instruction_)};
  }
  const auto& reconstruction = reconstruction_memo_.attention;
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      const auto& head = kv.head(layer, h);
      auto& out = scores[static_cast<size_t>(layer * kv.owned_kv_heads() + h)];
      out.resize(static_cast<size_t>(head.tokens()));
      const kvstore::HeadScoringInput input{head,
                                            kv.recent_queries(layer),
                                            h * group,
                                            group,
                                            kv.next_position(),
                                            model_.backend(),
                                            &kv.query_statistics(layer),
                                            model_.config().rope_freq_base,
                                            reconstruction.empty()
                                                ? std::span<const float>{}
                                                : reconstruction[layer * kv.owned_kv_heads() + h]};
      press_->score(input, out);
    }
  }
  return scores;
}

std::vector<std::vector<float>> KvCompressor::head_scores(const kvstore::KvStore& kv) const {
  auto scores = score_local(kv);
  reconstruction_memo_ = {};
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

// Token counts of this rank's heads: [heads] full-dimension tokens, then [heads] bytes held in
// low-rank segments (heads = n_layers x n_kv_heads of the model; other ranks' entries 0).
std::vector<int64_t> KvCompressor::local_counts(const kvstore::KvStore& kv) const {
  const auto& config = model_.config();
  const int64_t n_heads = config.n_head_kv;
  const auto& shard = model_.shard();
  std::vector<int64_t> counts(static_cast<size_t>(2 * config.n_layers * n_heads), 0);
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    for (int64_t h = 0; h < shard.kv_heads.size(); ++h) {
      const auto& head = kv.head(layer, h);
      const auto index = static_cast<size_t>(layer * n_heads + shard.kv_heads.begin + h);
      counts[index] = head.tokens();
      for (const auto& segment : head.low_rank()) {
        counts[counts.size() / 2 + index] += static_cast<int64_t>(segment.bytes_held());
      }
    }
  }
  return counts;
}

int64_t KvCompressor::token_width() const {
  return (press_ ? 1 : 0) + (dimensions_ ? dimensions_->features_per_token() : 0);
}

// This rank's per-token floats, head after head: the press's score, then the dimension features.
std::vector<float> KvCompressor::local_inputs(const kvstore::KvStore& kv) const {
  const auto local_scores = score_local(kv);
  const auto local_features =
      dimensions_ ? dimensions_->local_features(kv, model_.backend()) : std::vector<std::vector<float>>{};
  std::vector<float> send;
  for (size_t h = 0; h < local_scores.size(); ++h) {
    send.insert(send.end(), local_scores[h].begin(), local_scores[h].end());
    if (dimensions_) send.insert(send.end(), local_features[h].begin(), local_features[h].end());
  }
  return send;
}

// Floats rank r sends for a store whose (all-reduced) token counts are `counts`.
std::vector<int64_t> KvCompressor::rank_floats(std::span<const int64_t> counts) const {
  const int tp = comm_.world().size;
  const int64_t n_heads = model_.config().n_head_kv;
  std::vector<int64_t> out(static_cast<size_t>(tp), 0);
  for (int r = 0; r < tp; ++r) {
    const auto heads = split_range(n_heads, tp, r);
    for (int64_t layer = 0; layer < model_.config().n_layers; ++layer) {
      for (int64_t h = heads.begin; h < heads.end; ++h) out[r] += counts[layer * n_heads + h] * token_width();
    }
  }
  return out;
}

// Rank 0: the plan of one store from everything gathered for it (rank r's block, in rank order,
// is [layer][its heads][scores, features]), packed as [kept count per head..., kept indices of
// head 0, head 1, ..., their ranks in the same order]. Throws for a budget the method cannot meet.
std::vector<int32_t> KvCompressor::solve(std::span<const int64_t> counts_and_bytes,
                                         std::span<const float> gathered, int64_t next_position,
                                         int64_t budget_tokens) const {
  const auto& config = model_.config();
  const int64_t n_layers = config.n_layers;
  const int64_t n_heads = config.n_head_kv;
  const int tp = comm_.world().size;
  const auto half = counts_and_bytes.size() / 2;
  const std::span<const int64_t> counts = counts_and_bytes.first(half);
  const std::vector<int64_t> low_rank_bytes(counts_and_bytes.begin() + static_cast<ptrdiff_t>(half),
                                            counts_and_bytes.end());
  const int64_t score_width = press_ ? 1 : 0;
  const int64_t feature_width = token_width() - score_width;
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
        offset += n * static_cast<size_t>(token_width());
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
  // ChunkKV: whole chunks of consecutive tokens compete, for every allocator and the dimension solve
  if (press_ && chunk_size_ > 1) {
    for (auto& head : scores) kvstore::chunk_scores(head, chunk_size_);
  }
  std::vector<std::vector<int32_t>> kept;
  RankPlan ranks;
  if (!dimensions_ || dimensions_->config().kind == DimensionKind::kDynaKv) {
    if (allocator_) {  // token eviction (snapkv+dynakv: to budget / rate tokens first)
      const int64_t eviction_budget =
          dimensions_ ? dimensions_->eviction_budget(budget_tokens) : budget_tokens;
      const kvstore::AllocationInput input{n_layers, n_heads, scores, eviction_budget};
      kept = kvstore::select_top(scores, allocator_->head_budgets(input));
    } else {
      kept = all_tokens(counts);
    }
  }
  if (dimensions_) {
    const DimensionInput input{n_layers, n_heads, config.head_dim, budget_tokens,    next_position, scores,
                               features, kept,    low_rank_bytes,  model_.kv_dtype()};
    std::vector<std::vector<int32_t>> dimension_kept;
    dimensions_->solve(input, dimension_kept, ranks);
    kept = std::move(dimension_kept);
  }
  std::vector<int32_t> packed;
  for (const auto& head : kept) packed.push_back(static_cast<int32_t>(head.size()));
  for (const auto& head : kept) packed.insert(packed.end(), head.begin(), head.end());
  for (const auto& head : ranks) packed.insert(packed.end(), head.begin(), head.end());
  return packed;
}

CompressionPlan KvCompressor::unpack(std::span<const int32_t> packed) const {
  const auto& config = model_.config();
  CompressionPlan plan;
  plan.kept.resize(static_cast<size_t>(config.n_layers * config.n_head_kv));
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

CompressionPlan KvCompressor::plan(const kvstore::KvStore& kv, int64_t budget_tokens) {
  PlanJob job{this, &kv, budget_tokens, {}, {}};
  plan_all({&job, 1}, comm_);
  if (!job.error.empty()) throw comm::JobError(job.error, 0);
  return std::move(job.plan);
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

void KvCompressor::apply(kvstore::KvStore& kv, const CompressionPlan& plan) const {
  if (plan.empty()) return;
  if (plan.ranks.empty()) {
    kv.compact(local_part(plan.kept));
  } else {
    dimensions_->apply(kv, local_part(plan.kept), local_part(plan.ranks), model_.backend());
  }
}

bool KvCompressor::compress(kvstore::KvStore& kv, int64_t budget_tokens) {
  const auto full = plan(kv, budget_tokens);
  apply(kv, full);
  return !full.empty();
}

kvstore::KvStore KvCompressor::compressed_copy(const kvstore::KvStore& kv, int64_t budget_tokens) {
  return compressed_copy(kv, plan(kv, budget_tokens));
}

kvstore::KvStore KvCompressor::compressed_copy(const kvstore::KvStore& kv,
                                               const CompressionPlan& plan) const {
  const auto options = store_options();  // what this press needs, not what kv records for others
  if (!plan.empty() && plan.ranks.empty()) return kv.compacted_copy(local_part(plan.kept), options);
  auto copy = kv.copy(options);
  apply(copy, plan);
  return copy;
}

// For all jobs together: (1) one all-reduce (max) of the token counts of every job's heads, from
// their owners; (2) one all-gather of every job's per-token inputs (rank r's part: job after job);
// (3) rank 0 solves each job; (4) broadcasts of [per job: error length, plan length], the errors'
// text and the plans.
void plan_all(std::span<PlanJob> jobs, comm::Communicator& comm) {
  const int tp = comm.world().size;
  // KVzip's reconstruction, once per store for the jobs of one compressor (several budgets of one
  // prefill), and never from an earlier call: a store may have changed, or another taken its place.
  const auto forget_reconstructions = [&] {
    for (auto& job : jobs) job.compressor->reconstruction_memo_ = {};
  };
  forget_reconstructions();
  std::vector<int64_t> counts;
  std::vector<size_t> count_offset;
  for (auto& job : jobs) {
    count_offset.push_back(counts.size());
    const auto local = job.compressor->local_counts(*job.kv);
    counts.insert(counts.end(), local.begin(), local.end());
  }
  comm.all_reduce_max(counts);
  std::vector<std::span<const int64_t>> job_counts;  // [job]: its heads' counts, then low-rank bytes
  for (size_t j = 0; j < jobs.size(); ++j) {
    job_counts.push_back(
        std::span<const int64_t>(counts).subspan(count_offset[j], jobs[j].compressor->local_counts_size()));
  }
  std::vector<float> send;
  std::vector<int64_t> total_floats(static_cast<size_t>(tp), 0);
  std::vector<std::vector<int64_t>> job_floats(jobs.size());
  std::vector<bool> active(jobs.size(), false);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto& c = *jobs[j].compressor;
    const auto tokens = job_counts[j].first(job_counts[j].size() / 2);
    active[j] = c.dimensions() || *std::max_element(tokens.begin(), tokens.end()) > jobs[j].budget_tokens;
    if (!active[j]) continue;  // every head already fits: nothing to do
    const auto inputs = c.local_inputs(*jobs[j].kv);
    send.insert(send.end(), inputs.begin(), inputs.end());
    job_floats[j] = c.rank_floats(tokens);
    for (int r = 0; r < tp; ++r) total_floats[r] += job_floats[j][r];
  }
  std::vector<float> gathered(
      static_cast<size_t>(std::accumulate(total_floats.begin(), total_floats.end(), int64_t{0})));
  comm.all_gather(send, gathered, total_floats);
  forget_reconstructions();

  std::vector<int32_t> header(2 * jobs.size(), 0), plans;
  std::string errors;
  if (comm.world().is_coordinator()) {
    std::vector<size_t> rank_begin(static_cast<size_t>(tp), 0);  // where rank r's part starts, then moves on
    for (int r = 1; r < tp; ++r) rank_begin[r] = rank_begin[r - 1] + static_cast<size_t>(total_floats[r - 1]);
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (!active[j]) continue;
      std::vector<float> job_gathered;  // this job's blocks of every rank, in rank order
      for (int r = 0; r < tp; ++r) {
        const auto begin = gathered.begin() + static_cast<ptrdiff_t>(rank_begin[r]);
        job_gathered.insert(job_gathered.end(), begin, begin + job_floats[j][r]);
        rank_begin[r] += static_cast<size_t>(job_floats[j][r]);
      }
      const auto& c = *jobs[j].compressor;
      try {
        const auto packed =
            c.solve(job_counts[j], job_gathered, jobs[j].kv->next_position(), jobs[j].budget_tokens);
        header[2 * j + 1] = static_cast<int32_t>(packed.size());
        plans.insert(plans.end(), packed.begin(), packed.end());
      } catch (const std::exception& e) {
        header[2 * j] = static_cast<int32_t>(std::string_view(e.what()).size());
        errors += e.what();
      }
    }
  }
  comm.broadcast_values(std::span<int32_t>(header), 0);
  comm.broadcast_string(errors, 0);
  comm.broadcast_vector(plans, 0);
  size_t error_at = 0, plan_at = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].error = errors.substr(error_at, static_cast<size_t>(header[2 * j]));
    error_at += static_cast<size_t>(header[2 * j]);
    const auto n = static_cast<size_t>(header[2 * j + 1]);
    if (n > 0) jobs[j].plan = jobs[j].compressor->unpack(std::span<const int32_t>(plans).subspan(plan_at, n));
    plan_at += n;
  }
}

}  // namespace kvshrink::engine
