// Many sequences at once under mpirun -np 1, 2, 3 (real processes, the default model):
// - one batched step per round, sequences joining at different steps with prefill chunks beside
//   the others' decode tokens, gives each sequence the logits (within 1e-4) and greedy tokens of
//   the same sequence run alone;
// - the engine (scheduler + step protocol) returns the greedy tokens of each request run alone,
//   with and without compression, also when a tiny KV pool forces preemption and recompute;
// - a bad request (empty, too long, unknown press, budget out of range, larger than the pool)
//   fails alone with its own error while the others finish.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "engine/serving/engine.h"
#include "support/mpi_test_main.h"
#include "support/test_model.h"

namespace kvshrink {
namespace {

using engine::TokenId;

constexpr float kLogitTolerance = 1e-4f;
constexpr int64_t kNewTokens = 6;
const std::vector<int64_t> kPromptLengths = {5, 17, 33, 9, 41, 2, 26, 12};

comm::Communicator& control() {
  return testing::mpi_communicator();
}

// Deterministic token ids in the ordinary-text range of the vocabulary.
std::vector<TokenId> prompt_of(int64_t length, int64_t seed) {
  std::vector<TokenId> ids;
  for (int64_t i = 0; i < length; ++i)
    ids.push_back(static_cast<TokenId>(300 + (seed * 7919 + i * 104729) % 20000));
  return ids;
}

class BatchedEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = control().duplicate().release();
    engine_ = new engine::Engine(options(0), control(), *data_);
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete data_;
  }
  static engine::EngineOptions options(uint64_t kv_memory) {
    engine::EngineOptions o;
    o.model = testing::model_path();
    o.context_size = 256;
    o.max_num_batched_tokens = 16;  // prefill in chunks beside other sequences' decode rows
    o.max_num_seqs = 4;             // later requests join as earlier ones finish
    o.kv_memory = kv_memory != 0 ? kv_memory : uint64_t{64} << 20;
    // f32 KV: a sequence batched with others may differ from its solo run only by float summation
    // order, which f16 rounding would turn into one-unit flips of some halves (greedy tokens could
    // then part at a near tie)
    o.backend.kv_dtype = kernels::KvDtype::kF32;
    return o;
  }
  // Full KV bytes (counted at 16 bits) as this suite's f32 store would hold them.
  static uint64_t at_store_dtype(uint64_t full_bytes) {
    const int64_t d = engine_->model().config().head_dim;
    return full_bytes / kvstore::HeadSegment::bytes_per_token(d, kernels::KvDtype::kF16) *
           kvstore::HeadSegment::bytes_per_token(d, kernels::KvDtype::kF32);
  }
  static engine::Request request(int64_t i, const engine::CompressionSpec& compression = {}) {
    engine::Request r;
    r.prompt = prompt_of(kPromptLengths[static_cast<size_t>(i)], i);
    r.max_tokens = kNewTokens;
    r.ignore_eos = true;
    r.compression = compression;
    return r;
  }
  // Each request alone through the engine: rank 0's generated tokens.
  static std::vector<std::vector<TokenId>> alone(const std::vector<engine::Request>& requests) {
    std::vector<std::vector<TokenId>> out;
    for (const auto& r : requests) {
      auto results = engine_->run({r});
      out.push_back(results.empty() ? std::vector<TokenId>{} : results[0].tokens);
    }
    return out;
  }
  // A pool of `blocks` KV blocks per head (rounded down over all heads) on the busiest rank
  // (rank 0: 3 kv heads at np 1, 2 at np 2, 1 at np 3).
  static uint64_t pool_of(double blocks) {
    const auto& config = engine_->model().config();
    const int world = testing::mpi_communicator().world().size;
    const int64_t heads_rank0 = world == 1 ? config.n_head_kv : 2 - (world == 3);
    return static_cast<uint64_t>(static_cast<double>(config.n_layers * heads_rank0) * blocks) *
           kvstore::HeadSegment::block_bytes(config.head_dim, engine_->model().kv_dtype());
  }
  // Each request alone in `engine`, then all together: every request gives its solo tokens and no
  // error. Returns the preemptions of the joint run (on rank 0; 0 elsewhere).
  static int64_t together_as_alone(engine::Engine& engine, const std::vector<engine::Request>& requests) {
    std::vector<std::vector<TokenId>> expected;
    for (const auto& r : requests) {
      auto results = engine.run({r});
      expected.push_back(results.empty() ? std::vector<TokenId>{} : results[0].tokens);
    }
    const auto results = engine.run(requests);
    int64_t preemptions = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      EXPECT_EQ(results[i].error, "") << "request " << i;
      EXPECT_EQ(results[i].tokens, expected[i]) << "request " << i;
      preemptions += results[i].preemptions;
    }
    return preemptions;
  }
  static inline comm::Communicator* data_ = nullptr;
  static inline engine::Engine* engine_ = nullptr;
};

// Round r: sequence r joins (its prompt in chunks of at most 16 rows), the others run a prefill
// chunk or decode their greedy token; every sequence's logits match its solo run's.
TEST_F(BatchedEngineTest, OneStepOfManySequencesEqualsEachAlone) {
  // steps of up to 512 rows; f32 KV, so batching may only reorder float sums (f16 rounding turns
  // those into one-unit flips of some halves: testing::f32_kv_model())
  const auto loaded = testing::load_test_model(*data_, kernels::KvDtype::kF32);
  auto& model = *loaded->model;
  const auto vocab = model.config().vocab_size;
  const auto n = static_cast<int64_t>(kPromptLengths.size());
  std::vector<std::vector<std::vector<float>>> solo(n);  // [sequence][step] logits
  std::vector<std::vector<TokenId>> solo_tokens(n);
  for (int64_t s = 0; s < n; ++s) {
    auto kv = model.make_kv_store();
    const auto p = prompt_of(kPromptLengths[s], s);
    auto logits = model.forward(p, kv, engine::LogitsFor::kLastToken);
    for (int64_t t = 0; t < kNewTokens; ++t) {
      solo[s].push_back(logits);
      const TokenId next = engine::argmax(logits);
      solo_tokens[s].push_back(next);
      const TokenId step[] = {next};
      logits = model.forward(step, kv, engine::LogitsFor::kLastToken);
    }
  }
  struct Live {
    kvstore::KvStore kv;
    std::vector<TokenId> prompt;
    int64_t prefilled = 0;
    std::vector<TokenId> tokens;
  };
  std::vector<std::unique_ptr<Live>> live;
  for (int64_t s = 0; s < n; ++s)
    live.push_back(
        std::make_unique<Live>(Live{model.make_kv_store(), prompt_of(kPromptLengths[s], s), 0, {}}));
  for (int64_t round = 0;; ++round) {
    std::vector<engine::SequenceRows> batch;
    std::vector<int64_t> order;
    std::vector<std::vector<TokenId>> rows(n);
    for (int64_t s = 0; s < std::min(n, round + 1); ++s) {
      auto& l = *live[s];
      if (static_cast<int64_t>(l.tokens.size()) == kNewTokens) continue;
      if (l.prefilled < static_cast<int64_t>(l.prompt.size())) {
        const int64_t chunk = std::min<int64_t>(16, static_cast<int64_t>(l.prompt.size()) - l.prefilled);
        rows[s].assign(l.prompt.begin() + l.prefilled, l.prompt.begin() + l.prefilled + chunk);
        l.prefilled += chunk;
        const bool last = l.prefilled == static_cast<int64_t>(l.prompt.size());
        batch.push_back({&l.kv, rows[s], last ? engine::LogitsFor::kLastToken : engine::LogitsFor::kNone});
        if (last) order.push_back(s);
      } else {
        rows[s] = {l.tokens.back()};
        batch.push_back({&l.kv, rows[s], engine::LogitsFor::kLastToken});
        order.push_back(s);
      }
    }
    if (batch.empty() && round >= n) break;
    if (batch.empty()) continue;
    const auto logits = model.forward_step(batch);
    ASSERT_EQ(logits.size(), order.size() * static_cast<size_t>(vocab));
    for (size_t i = 0; i < order.size(); ++i) {
      auto& l = *live[order[i]];
      const std::vector<float> row(logits.begin() + static_cast<ptrdiff_t>(i * vocab),
                                   logits.begin() + static_cast<ptrdiff_t>((i + 1) * vocab));
      const auto& expected = solo[order[i]][l.tokens.size()];
      EXPECT_LT(testing::max_abs_difference(row, expected), kLogitTolerance)
          << "sequence " << order[i] << " token " << l.tokens.size();
      l.tokens.push_back(engine::argmax(row));
    }
  }
  for (int64_t s = 0; s < n; ++s) EXPECT_EQ(live[s]->tokens, solo_tokens[s]) << "sequence " << s;
}

TEST_F(BatchedEngineTest, EngineBatchEqualsEachRequestAlone) {
  engine::CompressionSpec snapkv;
  snapkv.method = "snapkv";
  snapkv.budget_tokens = 8;
  snapkv.params.window = 4;
  snapkv.params.pool_kernel = 3;
  snapkv.compress_every = 3;
  std::vector<engine::Request> requests;
  for (int64_t i = 0; i < static_cast<int64_t>(kPromptLengths.size()); ++i)
    requests.push_back(request(i, i % 2 == 1 ? snapkv : engine::CompressionSpec{}));
  const auto expected = alone(requests);
  const auto results = engine_->run(requests);
  if (!control().world().is_coordinator()) return;
  ASSERT_EQ(results.size(), requests.size());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].error, "");
    EXPECT_EQ(results[i].tokens, expected[i]) << "request " << i;
    EXPECT_EQ(results[i].finish, engine::FinishReason::kMaxTokens);
    if (i % 2 == 1) {  // held 8 tokens per head right after compression
      EXPECT_GT(results[i].kv_bytes_compressed, 0u);
      EXPECT_LT(results[i].kv_bytes_compressed, at_store_dtype(results[i].kv_bytes_full));
    }
  }
  EXPECT_LE(engine_->last_run().peak_running, 4);
  EXPECT_GE(engine_->last_run().peak_running, 2);
}

// Settings for forks: token eviction with decode-time compression, another press and budget,
// and full KV (a plain copy).
std::vector<engine::CompressionSpec> fork_settings() {
  engine::CompressionSpec snapkv;
  snapkv.method = "snapkv";
  snapkv.budget_tokens = 8;
  snapkv.params.window = 4;
  snapkv.params.pool_kernel = 3;
  engine::CompressionSpec h2o;
  h2o.method = "h2o";
  h2o.budget_tokens = 12;
  h2o.params.window = 4;
  h2o.compress_every = 3;
  return {snapkv, h2o, engine::CompressionSpec{}};
}

// eval's shape: one prefill, every setting a fork of it, decoded together; query-aware (first
// token sampled at full KV) and query-agnostic (a continuation prefilled after the compression).
// Each fork gives the tokens of the same request run alone under its setting, also in a pool
// so small that forks wait for room and sequences are preempted.
TEST_F(BatchedEngineTest, ForksEqualEachSettingRunAlone) {
  const auto settings = fork_settings();
  const uint64_t small_pool = pool_of(9);
  engine::Engine small(options(small_pool), control(), *data_);
  std::vector<engine::Request> requests;
  for (int64_t i = 0; i < 4; ++i) {
    auto r = request(i + 1);
    if (i % 2 == 1) r.continuation = prompt_of(5, 100 + i);  // query-agnostic
    requests.push_back(r);
  }
  // [request][variant]: the request alone at full KV, then each setting alone
  std::vector<std::vector<std::vector<TokenId>>> expected(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    std::vector<engine::Request> variants = {requests[i]};
    for (const auto& spec : settings) {
      variants.push_back(requests[i]);
      variants.back().compression = spec;
    }
    expected[i] = alone(variants);
  }
  for (auto& r : requests) r.forks = settings;
  for (engine::Engine* engine : {engine_, &small}) {
    std::vector<size_t> finished_variants(requests.size(), 0);
    auto forked = requests;
    for (size_t i = 0; i < forked.size(); ++i)
      forked[i].on_finish = [&finished_variants, i](size_t, const engine::RequestResult&) {
        ++finished_variants[i];
      };
    const auto results = engine->run(forked);
    if (!control().world().is_coordinator()) continue;
    for (size_t i = 0; i < results.size(); ++i) {
      ASSERT_EQ(results[i].forks.size(), settings.size());
      EXPECT_EQ(finished_variants[i], settings.size() + 1) << "request " << i;
      EXPECT_EQ(results[i].error, "");
      EXPECT_EQ(results[i].tokens, expected[i][0]) << "request " << i << " full KV";
      for (size_t f = 0; f < settings.size(); ++f) {
        const auto& fork = results[i].forks[f];
        EXPECT_EQ(fork.error, "") << "request " << i << " fork " << f;
        EXPECT_EQ(fork.tokens, expected[i][f + 1]) << "request " << i << " fork " << f;
        EXPECT_GT(fork.kv_bytes_compressed, 0u);
        if (settings[f].enabled() && requests[i].prompt.size() > 16) {  // longer than every budget
          EXPECT_LT(fork.kv_bytes_compressed, at_store_dtype(fork.kv_bytes_full_compressed))
              << "request " << i << " fork " << f;
        }
      }
    }
    if (engine == &small) EXPECT_LE(small.last_run().pool_peak_bytes, small_pool);
  }
}

// A pool of a few hundred blocks: decode growth forces the newest sequence out; it is
// recomputed later and still gives the tokens of its solo run.
TEST_F(BatchedEngineTest, TinyPoolPreemptsAndRecomputes) {
  const uint64_t kv_memory = pool_of(3 * 3.5);  // about 3.5 sequences of 48 positions (3 blocks per head)
  engine::Engine small(options(kv_memory), control(), *data_);
  std::vector<engine::Request> requests;
  for (int64_t i = 0; i < 6; ++i) {
    auto r = request(i % 2 == 0 ? 2 : 4);  // 33- and 41-token prompts: 3 blocks per head at full length
    r.prompt = prompt_of(30, i);
    r.max_tokens = 16;
    requests.push_back(r);
  }
  const int64_t preemptions = together_as_alone(small, requests);
  if (!control().world().is_coordinator()) return;
  EXPECT_GT(preemptions, 0);
  EXPECT_LE(small.last_run().pool_peak_bytes, kv_memory);
}

// Sequences that re-compact every 32 decode steps grow by at most 2 blocks per head between
// compactions, and take 3 more while compacting; admission keeps room for that, so no admitted
// prefill is preempted (and recomputed) later. Without the room: 3 preemptions here, and the
// recomputed sequences' tokens differ (they re-compact at other points).
TEST_F(BatchedEngineTest, AdmissionKeepsRoomForGrowthUntilTheNextCompaction) {
  // 12 blocks per head: 4 prefills at once (3 each), or 2 sequences at their peak (1 compacted +
  // 2 of tail + 3 while compacting) beside one more prefill
  const uint64_t kv_memory = pool_of(12);
  engine::Engine small(options(kv_memory), control(), *data_);
  engine::CompressionSpec snapkv;
  snapkv.method = "snapkv";
  snapkv.budget_tokens = 8;  // one block per head once compacted
  snapkv.params.window = 4;
  snapkv.params.pool_kernel = 3;
  snapkv.compress_every = 32;
  std::vector<engine::Request> requests;
  for (int64_t i = 0; i < 6; ++i) {
    auto r = request(0, snapkv);
    r.prompt = prompt_of(40, i);  // 3 blocks per head at full length
    r.max_tokens = 40;
    requests.push_back(r);
  }
  const int64_t preemptions = together_as_alone(small, requests);
  if (!control().world().is_coordinator()) return;
  EXPECT_EQ(preemptions, 0);
  EXPECT_GE(small.last_run().peak_running, 2);
  EXPECT_LE(small.last_run().pool_peak_bytes, kv_memory);
}

TEST_F(BatchedEngineTest, BadRequestsFailAloneWithTheirOwnError) {
  std::vector<engine::Request> requests;
  requests.push_back(request(0));
  auto empty = request(1);
  empty.prompt.clear();
  requests.push_back(empty);
  auto too_long = request(2);
  too_long.prompt = prompt_of(300, 2);  // the context holds 256
  requests.push_back(too_long);
  auto unknown = request(3);
  unknown.compression.method = "no-such-press";
  unknown.compression.budget_fraction = 0.5;
  requests.push_back(unknown);
  auto out_of_range = request(4);
  out_of_range.compression.method = "snapkv";
  out_of_range.compression.budget_fraction = 1.5;
  requests.push_back(out_of_range);
  auto missing_profile = request(5);
  missing_profile.compression.method = "snapkv";
  missing_profile.compression.allocator = "headkv";
  missing_profile.compression.budget_tokens = 40;
  missing_profile.compression.params.head_profile = "/nonexistent/profile.gguf";
  requests.push_back(missing_profile);
  requests.push_back(request(6));
  const auto expected = alone({requests[0], requests[6]});
  const auto results = engine_->run(requests);
  if (!control().world().is_coordinator()) return;
  EXPECT_EQ(results[0].tokens, expected[0]);
  EXPECT_EQ(results[6].tokens, expected[1]);
  const std::map<size_t, std::string> errors = {{1, "empty"},
                                                {2, "context holds 256"},
                                                {3, "no-such-press"},
                                                {4, "1.5"},
                                                {5, "/nonexistent/profile.gguf"}};
  for (const auto& [i, text] : errors) {
    EXPECT_EQ(results[i].finish, engine::FinishReason::kError) << "request " << i;
    EXPECT_NE(results[i].error.find(text), std::string::npos) << "request " << i << ": " << results[i].error;
    EXPECT_TRUE(results[i].tokens.empty());
  }
}

TEST_F(BatchedEngineTest, RequestLargerThanThePoolFailsAlone) {
  const auto& config = engine_->model().config();
  // 40 blocks per head-layer... a pool of 100 blocks cannot hold a 200-token prompt's full KV
  const uint64_t kv_memory =
      100 * kvstore::HeadSegment::block_bytes(config.head_dim, engine_->model().kv_dtype());
  engine::Engine small(options(kv_memory), control(), *data_);
  auto big = request(0);
  big.prompt = prompt_of(200, 0);
  auto fits = request(5);  // 2 tokens: n_layers x heads blocks
  fits.max_tokens = 2;
  const auto results = small.run({big, fits});
  if (!control().world().is_coordinator()) return;
  EXPECT_EQ(results[0].finish, engine::FinishReason::kError);
  EXPECT_NE(results[0].error.find("--kv-memory"), std::string::npos) << results[0].error;
  EXPECT_EQ(results[1].error, "");
  EXPECT_EQ(results[1].tokens.size(), 2u);
}

}  // namespace
}  // namespace kvshrink
