#include "engine/profiling/retrieval_head_profile.h"

#include <algorithm>
#include <numeric>

#include "comm/communicator.h"
#include "engine/profiling/retrieval_step_scores.h"

namespace kvshrink::engine {
namespace {

constexpr const char* kMethod = "headkv-r2 (niah)";
// Added to every score so that no head has exactly zero importance.
constexpr float kScoreFloor = 1e-6f;

// Adds the step scores of one probe to local [n_layers x owned kv heads].
void score_probe(LlamaModel& model, const NeedleProbe& probe, std::vector<double>& local) {
  const int64_t group = model.config().group_size();
  auto kv = model.make_kv_store(kvstore::KvStoreOptions{.query_window = 1});
  model.forward(probe.prompt, kv, LogitsFor::kLastToken);
  add_retrieval_step_scores(kv, group, probe.needle, model.backend(), local);
  for (size_t s = 0; s + 1 < probe.answer.size(); ++s) {
    model.forward(std::span<const TokenId>(&probe.answer[s], 1), kv, LogitsFor::kLastToken);
    add_retrieval_step_scores(kv, group, probe.needle, model.backend(), local);
  }
}

}  // namespace

RetrievalHeadScores score_retrieval_heads(LlamaModel& model, comm::Communicator& comm,
                                          std::vector<NeedleProbe> probes, const ProbeDone& done) {
  const auto& config = model.config();
  const auto n_probes = comm.broadcast_value<uint64_t>(probes.size(), 0);
  probes.resize(n_probes);
  const int64_t owned = model.shard().kv_heads.size();
  std::vector<double> local(static_cast<size_t>(config.n_layers * owned), 0.0);  // summed over probes
  for (uint64_t i = 0; i < n_probes; ++i) {
    auto& probe = probes[i];
    comm.broadcast_vector(probe.prompt, 0);
    comm.broadcast_vector(probe.answer, 0);
    comm.broadcast_values(std::span<int64_t>(probe.needle), 0);
    score_probe(model, probe, local);
    if (done) done(i, n_probes, probe);
  }
  // Every rank fills its own kv heads (zeros elsewhere); the sum is the whole model's.
  RetrievalHeadScores result{
      .probes = n_probes,
      .scores = std::vector<float>(static_cast<size_t>(config.n_layers * config.n_head_kv))};
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    for (int64_t h = 0; h < owned; ++h) {
      result.scores[static_cast<size_t>(layer * config.n_head_kv + model.shard().kv_heads.begin + h)] =
          static_cast<float>(local[static_cast<size_t>(layer * owned + h)] / static_cast<double>(n_probes));
    }
  }
  comm.all_reduce_sum(result.scores);
  return result;
}

HeadProfile retrieval_head_profile(const RetrievalHeadScores& scores, const std::string& identity,
                                   const LlamaConfig& config) {
  HeadProfile profile;
  profile.model = identity;
  profile.method = kMethod;
  profile.probes = static_cast<int64_t>(scores.probes);
  profile.n_layers = config.n_layers;
  profile.n_kv_heads = config.n_head_kv;
  for (const float score : scores.scores) profile.importance.push_back(std::max(score, kScoreFloor));
  return profile;
}

std::vector<size_t> strongest_heads(std::span<const float> scores, size_t count) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t top = std::min(count, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(top), order.end(),
                    [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  order.resize(top);
  return order;
}

}  // namespace kvshrink::engine
