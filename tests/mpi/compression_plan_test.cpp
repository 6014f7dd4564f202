// KV compression under mpirun -np 1, 2, 3 (kv heads split 3 / 2+1 / 1+1+1): for every method, at
// about 10% and 30% of a ~700-token prompt, the sharded job
//   1. plans exactly what one process holding the whole model plans (the same kept token indices
//      of every head and, for the dimension-level methods, the same rank of every kept token; the
//      only difference allowed is a printed tie flip, see PlanEqualsOneRank),
//   2. compacts every rank's heads to exactly its part of the plan (tokens, positions, bytes),
//   3. generates the same greedy tokens with the prompt compressed after prefill, and
//   4. re-compacts during decode (every 4 steps) back to the budget, with the same tokens.
// Rank 0 builds the one-rank reference itself over MpiCommunicator::self(), as in
// tensor_parallel_test. Both keep f32 KV: the check is that sharding changes nothing but float
// summation order, and rounding K/V to f16 would turn those reorderings into one-unit flips of some
// halves, so scores that f32 keeps within 1e-6 of each other would differ by ~1e-3
// (testing::f32_kv_model()). One prefill per side serves every method: the stores are copied, never
// prefilled again.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_error.h"
#include "comm/mpi_communicator.h"
#include "engine/compression/compression_spec.h"
#include "engine/compression/head_profile_file.h"
#include "engine/compression/kv_basis_file.h"
#include "engine/compression/pca.h"
#include "engine/generation/generator.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "kvstore/press_registry.h"
#include "support/mpi_test_main.h"
#include "support/test_model.h"

namespace kvshrink {
namespace {

using engine::KeepPlan;
using engine::KvCompressor;
using engine::TokenId;

constexpr int64_t kQueryWindow = 32;     // recent queries the stores keep: enough for every press
constexpr int64_t kQuestionTokens = 32;  // the prompt's tail, prefilled by generate() itself
constexpr int64_t kContextSize = 4096;
constexpr int64_t kGreedyTokens = 16;
constexpr int64_t kDecodeTokens = 24;
constexpr int64_t kEvery = 4;
constexpr double kBudgetFractions[] = {0.1, 0.3};
const char* const kLicense = "/usr/share/common-licenses/GPL-3";

// Every method of the registry (headkv with a synthetic head profile).
const std::vector<std::string>& methods() {
  return kvstore::method_names();
}

bool uniform_allocator(const std::string& method) {
  return !kvstore::is_dimension_method(method) && kvstore::default_allocator(method) == "uniform";
}

// The GPL-3 preamble (about 560 words), one line per paragraph.
std::string gpl_preamble() {
  std::ifstream in(kLicense);
  if (!in) throw std::runtime_error(std::string("cannot read ") + kLicense);
  std::string line, text, paragraph;
  bool inside = false;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(' ');
    const std::string trimmed = first == std::string::npos ? "" : line.substr(first);
    if (trimmed == "Preamble") {
      inside = true;
      continue;
    }
    if (trimmed == "TERMS AND CONDITIONS") break;
    if (!inside) continue;
    if (trimmed.empty()) {
      if (!paragraph.empty()) text += (text.empty() ? "" : "\n\n") + paragraph;
      paragraph.clear();
    } else {
      paragraph += (paragraph.empty() ? "" : " ") + trimmed;
    }
  }
  if (!paragraph.empty()) text += "\n\n" + paragraph;
  if (text.size() < 2000) throw std::runtime_error(std::string("no GPL-3 preamble found in ") + kLicense);
  return text;
}

// A copy of kv holding every token (local: no collective).
kvstore::KvStore full_copy(const kvstore::KvStore& kv) {
  kvstore::LocalKeepPlan all(static_cast<size_t>(kv.n_layers() * kv.owned_kv_heads()));
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      auto& kept = all[static_cast<size_t>(layer * kv.owned_kv_heads() + h)];
      kept.resize(static_cast<size_t>(kv.head(layer, h).tokens()));
      std::iota(kept.begin(), kept.end(), 0);
    }
  }
  return kv.compacted_copy(all);
}

int64_t tokens_held(const kvstore::KvStore& kv) {
  int64_t total = 0;
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) total += kv.head(layer, h).tokens();
  }
  return total;
}

// Full-dimension and low-rank tokens of this rank's heads.
int64_t all_tokens_held(const kvstore::KvStore& kv) {
  int64_t total = 0;
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      total += kv.head(layer, h).tokens() + kv.head(layer, h).low_rank_tokens();
    }
  }
  return total;
}

// (position, rank) of every token a head holds, by position: full-dimension tokens at head_dim.
std::vector<std::pair<int32_t, int32_t>> held_ranks(const kvstore::HeadCache& head) {
  std::vector<std::pair<int32_t, int32_t>> out;
  for (const int32_t p : head.positions()) out.emplace_back(p, static_cast<int32_t>(head.head_dim()));
  for (const auto& segment : head.low_rank()) {
    for (const int32_t p : segment.block->positions())
      out.emplace_back(p, static_cast<int32_t>(segment.rank()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// dynakv keeps every token at rank >= d/8 (13.2% of its bytes): 10% is below what it can hold.
bool dynakv_below_floor(const std::string& method, int64_t budget) {
  return method == "dynakv" && budget < 90;
}

// ... and says so on every rank.
void expect_floor_error(KvCompressor& c, const kvstore::KvStore& kv, int64_t budget) {
  try {
    c.plan(kv, budget);
    ADD_FAILURE() << "dynakv planned below its floor";
  } catch (const comm::JobError& e) {
    EXPECT_NE(std::string(e.what()).find("dynakv cannot meet the budget"), std::string::npos) << e.what();
  }
}

// A basis file for the test: per (layer, kv head) the energy-ordered PCA of the one-rank store's own
// post-RoPE keys and values (a calibration on the prompt itself), a deterministic importance
// predictor, and identity joint bases.
engine::KvBasis prompt_basis(const kvstore::KvStore& kv, const std::string& identity) {
  engine::KvBasis b;
  b.model = identity;
  b.n_layers = kv.n_layers();
  b.n_kv_heads = kv.owned_kv_heads();
  b.head_dim = kv.head_dim();
  b.tokens = kv.next_position();
  b.chunk = kv.next_position();
  b.text = "compression_plan_test prompt";
  const int64_t d = b.head_dim;
  for (int64_t layer = 0; layer < b.n_layers; ++layer) {
    for (int64_t h = 0; h < b.n_kv_heads; ++h) {
      const auto& segment = kv.head(layer, h).segments().front();
      const auto n = segment.tokens();
      const auto keys = engine::pca(segment.keys(), n, d);
      const auto values = engine::pca(segment.values(), n, d);
      b.key_basis.insert(b.key_basis.end(), keys.components.begin(), keys.components.end());
      b.value_basis.insert(b.value_basis.end(), values.components.begin(), values.components.end());
      b.key_energy.insert(b.key_energy.end(), keys.eigenvalues.begin(), keys.eigenvalues.end());
      b.value_energy.insert(b.value_energy.end(), values.eigenvalues.begin(), values.eigenvalues.end());
      for (int64_t i = 0; i < 2 * d + 1; ++i) {
        b.importance.push_back(0.02f * static_cast<float>((i * 13 + layer * 7 + h * 5) % 11) - 0.1f);
      }
    }
  }
  b.joint_dim = b.n_kv_heads * d;
  const int64_t jd = b.joint_dim;
  for (int64_t layer = 0; layer < b.n_layers; ++layer) {
    for (int64_t k = 0; k < jd; ++k) {
      for (int64_t c = 0; c < jd; ++c) {
        b.joint_key_basis.push_back(k == c ? 1.0f : 0.0f);
        b.joint_value_basis.push_back(k == c ? 1.0f : 0.0f);
      }
    }
    b.joint_key_energy.insert(b.joint_key_energy.end(), static_cast<size_t>(jd), 0.0f);
    b.joint_value_energy.insert(b.joint_value_energy.end(), static_cast<size_t>(jd), 0.0f);
  }
  return b;
}

int64_t plan_tokens(const KeepPlan& plan) {
  int64_t total = 0;
  for (const auto& head : plan) total += static_cast<int64_t>(head.size());
  return total;
}

// Exact sum / max over the ranks of a non-negative value (all_reduce_max over one slot per rank).
std::vector<int64_t> gather_values(int64_t value) {
  auto& comm = testing::mpi_communicator();
  std::vector<int64_t> slots(static_cast<size_t>(comm.world().size), 0);
  slots[static_cast<size_t>(comm.world().rank)] = value;
  comm.all_reduce_max(slots);
  return slots;
}
int64_t sum_over_ranks(int64_t value) {
  const auto all = gather_values(value);
  return std::accumulate(all.begin(), all.end(), int64_t{0});
}
int64_t max_over_ranks(int64_t value) {
  const auto all = gather_values(value);
  return *std::max_element(all.begin(), all.end());
}

// True on every rank iff every rank holds the same plan.
bool same_plan_on_every_rank(const KeepPlan& plan) {
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { hash = (hash ^ v) * 1099511628211ull; };
  for (const auto& head : plan) {
    mix(head.size());
    for (int32_t t : head) mix(static_cast<uint64_t>(t));
  }
  const auto h = static_cast<int64_t>(hash >> 2);  // non-negative, so -h does not overflow
  std::vector<int64_t> extremes = {h, -h};
  testing::mpi_communicator().all_reduce_max(extremes);
  return extremes[0] == h && -extremes[1] == h;
}

// Every head's scores on a one-rank store, as plan() hands them to the allocator (TOVA: the mean
// over the heads of a layer).
std::vector<std::vector<float>> one_rank_scores(const KvCompressor& compressor, const kvstore::KvStore& kv) {
  const int64_t n_heads = kv.owned_kv_heads();
  auto scores = compressor.head_scores(kv);  // dynakv: no press, empty rows
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < n_heads; ++h)
      scores[static_cast<size_t>(layer * n_heads + h)].resize(
          static_cast<size_t>(kv.head(layer, h).tokens()));
    if (!compressor.press() || !compressor.press()->shares_selection_across_heads()) continue;
    auto& first = scores[static_cast<size_t>(layer * n_heads)];
    for (int64_t h = 1; h < n_heads; ++h) {
      const auto& other = scores[static_cast<size_t>(layer * n_heads + h)];
      for (size_t t = 0; t < first.size(); ++t) first[t] += other[t];
    }
    for (auto& x : first) x /= static_cast<float>(n_heads);
    for (int64_t h = 1; h < n_heads; ++h) scores[static_cast<size_t>(layer * n_heads + h)] = first;
  }
  if (compressor.press()) {
    for (auto& head : scores) kvstore::chunk_scores(head, compressor.chunk_size());
  }
  return scores;
}

// Tokens kept by one dimension plan only, plus tokens both keep at different ranks.
int64_t dimension_plan_flips(const engine::CompressionPlan& got, const engine::CompressionPlan& expected) {
  if (got.kept.size() != expected.kept.size() || got.ranks.size() != expected.ranks.size())
    return std::numeric_limits<int64_t>::max() / 2;
  int64_t flips = 0;
  for (size_t h = 0; h < got.kept.size(); ++h) {
    std::map<int32_t, int32_t> rank_of;  // token -> its rank in the expected plan
    for (size_t i = 0; i < expected.kept[h].size(); ++i) rank_of[expected.kept[h][i]] = expected.ranks[h][i];
    for (size_t i = 0; i < got.kept[h].size(); ++i) {
      const auto it = rank_of.find(got.kept[h][i]);
      if (it == rank_of.end()) {
        ++flips;
        continue;
      }
      flips += it->second != got.ranks[h][i];
      rank_of.erase(it);
    }
    flips += static_cast<int64_t>(rank_of.size());
  }
  return flips;
}

// Scores this close are a tie up to the rounding of the sharded forward pass (the f32 all-reduce
// and BLAS blocking differences that tensor_parallel_test bounds at 1e-4 in the logits).
constexpr double kTieTolerance = 1e-4;

// How a sharded plan differs from the one-rank plan. A head "flips on a tie" when it keeps as many
// tokens as the reference and every token kept by one plan only has a one-rank score within
// kTieTolerance (relative) of the one-rank cutoff (the lowest score the reference keeps there).
struct PlanDifference {
  int64_t heads = 0;     // heads whose kept indices differ
  int64_t tokens = 0;    // token indices kept by one plan only
  int64_t not_ties = 0;  // differing heads that are not tie flips
  std::string where;     // the first few heads, with their scores
  bool equal() const { return heads == 0; }
};

PlanDifference compare_plans(const KeepPlan& got, const KeepPlan& expected,
                             const std::vector<std::vector<float>>& scores, int64_t n_heads) {
  PlanDifference diff;
  if (got.size() != expected.size() || scores.size() != expected.size()) {
    diff.heads = diff.not_ties = 1;
    diff.where =
        "plans of " + std::to_string(got.size()) + " and " + std::to_string(expected.size()) + " heads";
    return diff;
  }
  std::ostringstream where;
  where.precision(9);
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == expected[i]) continue;
    std::vector<int32_t> swapped;
    std::set_symmetric_difference(got[i].begin(), got[i].end(), expected[i].begin(), expected[i].end(),
                                  std::back_inserter(swapped));
    const auto& s = scores[i];
    float cutoff = std::numeric_limits<float>::infinity();
    for (int32_t t : expected[i]) cutoff = std::min(cutoff, s[static_cast<size_t>(t)]);
    bool tie = got[i].size() == expected[i].size() && std::isfinite(cutoff);
    for (int32_t t : swapped) {
      const double score = s[static_cast<size_t>(t)];
      tie = tie &&
            std::abs(score - cutoff) <= kTieTolerance * std::max(std::abs(score), std::abs(double{cutoff}));
    }
    ++diff.heads;
    diff.tokens += static_cast<int64_t>(swapped.size());
    if (!tie) ++diff.not_ties;
    if (diff.heads <= 6) {
      where << "\n    layer " << i / n_heads << " head " << i % n_heads << (tie ? " (tie)" : " (NOT a tie)")
            << ": keeps " << got[i].size() << " vs " << expected[i].size() << "; one-rank cutoff " << cutoff
            << "; token:score kept only by the sharded plan {";
      for (int32_t t : swapped) {
        if (!std::binary_search(expected[i].begin(), expected[i].end(), t)) where << ' ' << t << ':' << s[t];
      }
      where << " }, only by one rank {";
      for (int32_t t : swapped) {
        if (std::binary_search(expected[i].begin(), expected[i].end(), t)) where << ' ' << t << ':' << s[t];
      }
      where << " }";
    }
  }
  diff.where = where.str();
  return diff;
}

class CompressionPlanTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& comm = testing::mpi_communicator();
    sharded_ = testing::load_test_model(comm, kernels::KvDtype::kF32).release();
    {
      const auto file = engine::GgufFile::open(testing::model_path());
      identity_ = new std::string(engine::model_identity(file, sharded_->model->config()));
    }
    const auto& config = sharded_->model->config();

    // A synthetic HeadKV profile (uneven, deterministic importances) for this model, written by
    // rank 0 into a temporary directory every rank can read.
    std::string profile;
    if (coordinator()) {
      self_comm_ = new comm::MpiCommunicator(comm::MpiCommunicator::self());
      reference_ = testing::load_test_model(*self_comm_, kernels::KvDtype::kF32).release();
      const auto dir = std::filesystem::temp_directory_path() /
                       ("kvshrink_compression_plan_" + std::to_string(::getpid()));
      std::filesystem::create_directories(dir);
      engine::HeadProfile p;
      p.model = *identity_;
      p.method = "synthetic (compression_plan_test)";
      p.probes = 1;
      p.n_layers = config.n_layers;
      p.n_kv_heads = config.n_head_kv;
      for (int64_t i = 0; i < config.n_layers * config.n_head_kv; ++i) {
        p.importance.push_back(0.05 + static_cast<double>((i * 37 + 11) % 29) / 29.0);
      }
      profile = (dir / "smollm2.heads.gguf").string();
      engine::write_head_profile(profile, p);
    }
    comm.broadcast_string(profile, 0);
    profile_path_ = new std::string(profile);

    // The prompt: rank 0 tokenizes, every rank gets the ids.
    std::vector<TokenId> ids;
    if (coordinator()) {
      ids = sharded_->tokenizer->encode(engine::render_chatml(
          {{"user", "Read the following text, then answer the question after it.\n\n" + gpl_preamble() +
                        "\n\nQuestion: What does this text say about the freedom to change software and "
                        "to share it? Explain in a few sentences."}}));
    }
    comm.broadcast_vector(ids, 0);
    prompt_ = new std::vector<TokenId>(ids);

    std::string basis;  // written by rank 0 once its reference store is prefilled
    // One prefill per side: the context (all but the question tail), then the tail on a copy.
    const kvstore::KvStoreOptions options{.query_window = kQueryWindow,
                                          .track_attention_mass = true,
                                          .query_statistics_from = 4,
                                          .keep_token_ids = true};
    const std::vector<TokenId> context(ids.begin(), ids.end() - kQuestionTokens);
    const std::vector<TokenId> question(ids.end() - kQuestionTokens, ids.end());
    context_kv_ = new kvstore::KvStore(sharded_->model->make_kv_store(options));
    sharded_->model->forward(context, *context_kv_, engine::LogitsFor::kLastToken);
    prompt_kv_ = new kvstore::KvStore(full_copy(*context_kv_));
    sharded_->model->forward(question, *prompt_kv_, engine::LogitsFor::kLastToken);
    if (coordinator()) {
      ref_context_kv_ = new kvstore::KvStore(reference_->model->make_kv_store(options));
      reference_->model->forward(context, *ref_context_kv_, engine::LogitsFor::kLastToken);
      ref_prompt_kv_ = new kvstore::KvStore(full_copy(*ref_context_kv_));
      reference_->model->forward(question, *ref_prompt_kv_, engine::LogitsFor::kLastToken);
      basis = (std::filesystem::path(profile).parent_path() / "smollm2.kvbasis.gguf").string();
      engine::write_kv_basis(basis, prompt_basis(*ref_prompt_kv_, *identity_));
      std::printf("prompt: %zu tokens (GPL-3 preamble + question); budgets %lld and %lld tokens per head\n",
                  ids.size(), static_cast<long long>(budgets()[0]), static_cast<long long>(budgets()[1]));
    }
    comm.broadcast_string(basis, 0);
    basis_path_ = new std::string(basis);
  }

  static void TearDownTestSuite() {
    delete ref_prompt_kv_;
    delete ref_context_kv_;
    delete prompt_kv_;
    delete context_kv_;
    delete reference_;
    delete self_comm_;
    delete sharded_;
    if (coordinator() && profile_path_) {
      std::error_code ignored;
      std::filesystem::remove_all(std::filesystem::path(*profile_path_).parent_path(), ignored);
    }
    delete profile_path_;
    delete basis_path_;
    delete identity_;
    delete prompt_;
  }

  static bool coordinator() { return testing::mpi_communicator().world().is_coordinator(); }
  static int64_t n_prompt() { return static_cast<int64_t>(prompt_->size()); }
  static int64_t n_layers() { return sharded_->model->config().n_layers; }
  static int64_t n_heads() { return sharded_->model->config().n_head_kv; }
  static uint64_t bytes_per_token() {
    return kvstore::HeadSegment::bytes_per_token(sharded_->model->config().head_dim,
                                                 sharded_->model->kv_dtype());
  }
  // ~10% and ~30% of the prompt, tokens per head.
  static std::vector<int64_t> budgets() {
    std::vector<int64_t> out;
    for (double f : kBudgetFractions) out.push_back(std::llround(f * static_cast<double>(n_prompt())));
    return out;
  }
  static std::vector<TokenId> question() {
    return std::vector<TokenId>(prompt_->end() - kQuestionTokens, prompt_->end());
  }

  // The method's compressor at its paper defaults, for `model` over `comm` (collective for headkv).
  static std::unique_ptr<KvCompressor> compressor(const std::string& method, int64_t budget,
                                                  const testing::TestModel& model, comm::Communicator& comm,
                                                  int64_t chunk_size = 1) {
    engine::CompressionSpec spec;
    spec.method = method;
    spec.params = kvstore::default_params(method);
    spec.params.chunk_size = chunk_size;
    spec.params.head_profile = *profile_path_;
    spec.params.kv_basis = *basis_path_;
    spec.budget_tokens = budget;
    auto made = engine::make_compressor(spec, *model.model, comm, testing::model_path(), *identity_,
                                        *model.tokenizer);
    // The stores were built to serve every press.
    const auto needs = made->store_options();
    EXPECT_LE(needs.query_window, kQueryWindow) << method;
    EXPECT_TRUE(!needs.track_attention_mass || context_kv_->options().track_attention_mass) << method;
    EXPECT_TRUE(needs.query_statistics_from < 0 ||
                needs.query_statistics_from == context_kv_->options().query_statistics_from)
        << method;
    EXPECT_TRUE(!needs.keep_token_ids || context_kv_->options().keep_token_ids) << method;
    return made;
  }
  static std::unique_ptr<KvCompressor> sharded_compressor(const std::string& method, int64_t budget,
                                                          int64_t chunk_size = 1) {
    return compressor(method, budget, *sharded_, testing::mpi_communicator(), chunk_size);
  }
  static std::unique_ptr<KvCompressor> reference_compressor(const std::string& method, int64_t budget,
                                                            int64_t chunk_size = 1) {
    return compressor(method, budget, *reference_, *self_comm_, chunk_size);
  }

  static void check_dimension_compression(const std::string& method, KvCompressor& c,
                                          const engine::CompressionPlan& plan, int64_t budget);

  static inline testing::TestModel* sharded_ = nullptr;
  static inline comm::MpiCommunicator* self_comm_ = nullptr;  // rank 0 only
  static inline testing::TestModel* reference_ = nullptr;     // rank 0 only
  static inline std::string* identity_ = nullptr;
  static inline std::string* profile_path_ = nullptr;
  static inline std::string* basis_path_ = nullptr;
  static inline std::vector<TokenId>* prompt_ = nullptr;
  static inline kvstore::KvStore* context_kv_ = nullptr;      // the prompt but its question tail
  static inline kvstore::KvStore* prompt_kv_ = nullptr;       // the whole prompt
  static inline kvstore::KvStore* ref_context_kv_ = nullptr;  // rank 0 only
  static inline kvstore::KvStore* ref_prompt_kv_ = nullptr;   // rank 0 only
};

TEST_F(CompressionPlanTest, PromptFitsTheTest) {
  EXPECT_GE(n_prompt(), 600);
  EXPECT_LE(n_prompt(), 900);
  EXPECT_EQ(prompt_kv_->next_position(), n_prompt());
  EXPECT_EQ(context_kv_->next_position(), n_prompt() - kQuestionTokens);
  for (int64_t layer = 0; layer < n_layers(); ++layer) {
    for (int64_t h = 0; h < prompt_kv_->owned_kv_heads(); ++h) {
      const auto positions = prompt_kv_->head(layer, h).positions();
      ASSERT_EQ(static_cast<int64_t>(positions.size()), n_prompt());
      for (int64_t t = 0; t < n_prompt(); ++t) ASSERT_EQ(positions[t], t);
    }
  }
}

// 1. The sharded plan is the one-rank plan, head by head, token by token. The only difference
// allowed is a tie flip: a head keeping as many tokens, swapping tokens whose one-rank scores equal
// the cutoff to within rounding (e.g. KNorm at layer 0, where a token repeated in the prompt has the
// same key norm at every position, RoPE being a rotation). Each one is printed and counted.
TEST_F(CompressionPlanTest, PlanEqualsOneRank) {
  int64_t settings = 0, settings_with_flips = 0, flipped_heads = 0, flipped_tokens = 0;
  for (const auto& method : methods()) {
    for (const int64_t budget : budgets()) {
      SCOPED_TRACE(method + " at " + std::to_string(budget) + " tokens per head");
      auto sharded = sharded_compressor(method, budget);
      if (dynakv_below_floor(method, budget)) {
        expect_floor_error(*sharded, *prompt_kv_, budget);
        continue;
      }
      const auto sharded_plan = sharded->plan(*prompt_kv_, budget);
      const KeepPlan& plan = sharded_plan.kept;
      ASSERT_EQ(static_cast<int64_t>(plan.size()), n_layers() * n_heads());
      EXPECT_TRUE(same_plan_on_every_rank(plan));
      const bool dimensions = kvstore::is_dimension_method(method);
      EXPECT_EQ(sharded_plan.ranks.empty(), !dimensions);
      if (dimensions) {
        EXPECT_TRUE(same_plan_on_every_rank(sharded_plan.ranks));
        ASSERT_EQ(sharded_plan.ranks.size(), plan.size());
        for (size_t h = 0; h < plan.size(); ++h) ASSERT_EQ(sharded_plan.ranks[h].size(), plan[h].size());
      }
      for (const auto& head : plan) {
        EXPECT_TRUE(std::is_sorted(head.begin(), head.end()));
        EXPECT_EQ(std::adjacent_find(head.begin(), head.end()), head.end());
        if (!head.empty()) {
          EXPECT_TRUE(head.front() >= 0 && head.back() < n_prompt());
        }
      }
      if (!coordinator()) continue;
      auto reference = reference_compressor(method, budget);
      const auto reference_plan = reference->plan(*ref_prompt_kv_, budget);
      const KeepPlan& expected = reference_plan.kept;
      if (dimensions) {  // kept tokens and every kept token's rank, up to rounding flips
        const int64_t flips = dimension_plan_flips(sharded_plan, reference_plan);
        const double kept = static_cast<double>(plan_tokens(plan));
        // The greedy rank allocation compares per-token losses computed from the sharded forward's
        // KV, which differs from one rank's by f32 all-reduce rounding: a few near-equal marginal
        // losses may swap which token gets the next rank step. More than 0.5 % is a real difference.
        EXPECT_LE(static_cast<double>(flips), 0.005 * std::max(1.0, kept)) << flips << " tokens differ";
        double coefficients = 0.0;
        for (const auto& head : sharded_plan.ranks) {
          for (const int32_t r : head) coefficients += r;
        }
        std::printf(
            "  %-13s %3lld tokens/head: plan and ranks %s one rank (%lld of %.0f kept tokens differ, "
            "rounding flips); mean rank %.1f\n",
            method.c_str(), static_cast<long long>(budget), flips == 0 ? "equal to" : "within rounding of",
            static_cast<long long>(flips), kept, coefficients / std::max(1.0, kept));
        ++settings;
        continue;
      }
      const auto diff =
          compare_plans(plan, expected, one_rank_scores(*reference, *ref_prompt_kv_), n_heads());
      EXPECT_EQ(diff.not_ties, 0) << "the sharded plan differs from the one-rank plan in " << diff.heads
                                  << " heads, not all on ties:" << diff.where;
      ++settings;
      if (!diff.equal()) {
        ++settings_with_flips;
        flipped_heads += diff.heads;
        flipped_tokens += diff.tokens;
      }
      int64_t fewest = std::numeric_limits<int64_t>::max(), most = 0;
      for (const auto& head : plan) {
        fewest = std::min<int64_t>(fewest, static_cast<int64_t>(head.size()));
        most = std::max<int64_t>(most, static_cast<int64_t>(head.size()));
      }
      std::printf("  %-12s %3lld tokens/head: plan %s (kept per head %lld..%lld, %lld in all)%s\n",
                  method.c_str(), static_cast<long long>(budget),
                  diff.equal() ? "equal" : (std::to_string(diff.heads) + " heads differ").c_str(),
                  static_cast<long long>(fewest), static_cast<long long>(most),
                  static_cast<long long>(plan_tokens(plan)), diff.where.c_str());
    }
  }
  if (coordinator()) {
    std::printf(
        "plans equal to one rank in %lld of %lld settings; tie flips: %lld heads, %lld token indices\n",
        static_cast<long long>(settings - settings_with_flips), static_cast<long long>(settings),
        static_cast<long long>(flipped_heads), static_cast<long long>(flipped_tokens));
  }
}

// 1b. Chunk-level selection (--chunk-size 4) for every token-eviction method: the sharded plan is
// the one-rank plan (tie flips as above), the same on every rank, within the budget, and every head
// keeps whole chunks of 4 consecutive tokens but at most one (the last the allocator reached).
TEST_F(CompressionPlanTest, ChunkPlanEqualsOneRank) {
  constexpr int64_t kChunk = 4;
  for (const auto& method : methods()) {
    if (kvstore::is_dimension_method(method)) continue;
    const int64_t budget = budgets()[0];
    SCOPED_TRACE(method + " chunk 4 at " + std::to_string(budget) + " tokens per head");
    auto sharded = sharded_compressor(method, budget, kChunk);
    ASSERT_EQ(sharded->chunk_size(), kChunk);
    const KeepPlan plan = sharded->plan(*prompt_kv_, budget).kept;
    ASSERT_EQ(static_cast<int64_t>(plan.size()), n_layers() * n_heads());
    EXPECT_TRUE(same_plan_on_every_rank(plan));
    EXPECT_LE(plan_tokens(plan), n_layers() * n_heads() * budget);
    if (uniform_allocator(method)) {
      EXPECT_EQ(plan_tokens(plan), n_layers() * n_heads() * budget);
    }
    if (!coordinator()) continue;
    auto reference = reference_compressor(method, budget, kChunk);
    const KeepPlan expected = reference->plan(*ref_prompt_kv_, budget).kept;
    const auto scores = one_rank_scores(*reference, *ref_prompt_kv_);
    const auto diff = compare_plans(plan, expected, scores, n_heads());
    EXPECT_EQ(diff.not_ties, 0) << diff.heads << " heads differ, not all on ties:" << diff.where;
    // Whole chunks: per head, at most one chunk with some but not all of its candidates kept.
    int64_t most_cut = 0, differs_from_per_token = 0;
    auto per_token = reference_compressor(method, budget);
    const KeepPlan token_plan = per_token->plan(*ref_prompt_kv_, budget).kept;
    for (size_t h = 0; h < expected.size(); ++h) {
      std::vector<bool> kept(scores[h].size(), false);
      for (int32_t t : expected[h]) kept[static_cast<size_t>(t)] = true;
      int64_t cut = 0;
      for (size_t begin = 0; begin < kept.size(); begin += kChunk) {
        int64_t candidates = 0, taken = 0;
        for (size_t t = begin; t < std::min(kept.size(), begin + kChunk); ++t) {
          if (scores[h][t] == kvstore::kAlwaysKeep) continue;
          ++candidates, taken += kept[t] ? 1 : 0;
        }
        cut += (taken > 0 && taken < candidates) ? 1 : 0;
      }
      most_cut = std::max(most_cut, cut);
      differs_from_per_token += expected[h] != token_plan[h] ? 1 : 0;
    }
    EXPECT_LE(most_cut, 1);
    if (method != "streamingllm") {  // its recency scores keep the same suffix in chunks or not
      EXPECT_GT(differs_from_per_token, 0) << "chunk 4 planned what per-token selection plans";
    }
    std::printf("  %-12s chunk 4, %3lld tokens/head: plan %s, %lld of %zu heads differ from per-token\n",
                method.c_str(), static_cast<long long>(budget),
                diff.equal() ? "equal" : (std::to_string(diff.heads) + " heads tie-flip").c_str(),
                static_cast<long long>(differs_from_per_token), expected.size());
  }
}

// The tie check of PlanEqualsOneRank rejects a real difference: one kept token traded for the
// lowest-scored dropped one.
TEST_F(CompressionPlanTest, TieCheckRejectsARealDifference) {
  if (!coordinator()) return;
  const int64_t budget = budgets()[0];
  auto reference = reference_compressor("snapkv", budget);
  const KeepPlan expected = reference->plan(*ref_prompt_kv_, budget).kept;
  const auto scores = one_rank_scores(*reference, *ref_prompt_kv_);
  EXPECT_TRUE(compare_plans(expected, expected, scores, n_heads()).equal());

  const size_t i = static_cast<size_t>(5 * n_heads() + 1);
  const auto& s = scores[i];
  KeepPlan changed = expected;
  auto& kept = changed[i];
  const auto best = std::max_element(kept.begin(), kept.end(), [&](int32_t a, int32_t b) {
    return (std::isfinite(s[a]) ? s[a] : -1.0f) < (std::isfinite(s[b]) ? s[b] : -1.0f);
  });
  int32_t worst_dropped = -1;
  for (int32_t t = 0; t < static_cast<int32_t>(s.size()); ++t) {
    if (!std::binary_search(expected[i].begin(), expected[i].end(), t) &&
        (worst_dropped < 0 || s[t] < s[worst_dropped])) {
      worst_dropped = t;
    }
  }
  ASSERT_GE(worst_dropped, 0);
  *best = worst_dropped;
  std::sort(kept.begin(), kept.end());
  const auto diff = compare_plans(changed, expected, scores, n_heads());
  EXPECT_EQ(diff.heads, 1);
  EXPECT_EQ(diff.tokens, 2);
  EXPECT_EQ(diff.not_ties, 1) << diff.where;
}

// 2. compress() and compressed_copy() leave every rank's heads holding exactly its part of the plan.
TEST_F(CompressionPlanTest, CompressKeepsExactlyThePlannedTokens) {
  const int64_t owned = prompt_kv_->owned_kv_heads();
  const int64_t first_head = sharded_->model->shard().kv_heads.begin;
  for (const auto& method : methods()) {
    for (const int64_t budget : budgets()) {
      SCOPED_TRACE(method + " at " + std::to_string(budget) + " tokens per head");
      auto c = sharded_compressor(method, budget);
      if (dynakv_below_floor(method, budget)) {
        expect_floor_error(*c, *prompt_kv_, budget);
        continue;
      }
      const auto full_plan = c->plan(*prompt_kv_, budget);
      const KeepPlan& plan = full_plan.kept;
      ASSERT_FALSE(plan.empty());
      const auto local = c->local_part(plan);
      if (kvstore::is_dimension_method(method)) {
        check_dimension_compression(method, *c, full_plan, budget);
        continue;
      }
      ASSERT_EQ(static_cast<int64_t>(local.size()), n_layers() * owned);

      auto compressed = full_copy(*prompt_kv_);
      ASSERT_TRUE(c->compress(compressed, budget));
      const auto copy = c->compressed_copy(*prompt_kv_, budget);
      for (int64_t layer = 0; layer < n_layers(); ++layer) {
        for (int64_t h = 0; h < owned; ++h) {
          // Prefill positions are 0..n-1, so the kept positions are the kept indices.
          const auto& planned = plan[layer * n_heads() + first_head + h];
          EXPECT_EQ(local[layer * owned + h], planned);
          EXPECT_EQ(compressed.head(layer, h).positions(), planned) << "layer " << layer << " head " << h;
          EXPECT_EQ(copy.head(layer, h).positions(), planned) << "layer " << layer << " head " << h;
          EXPECT_EQ(prompt_kv_->head(layer, h).tokens(), n_prompt());  // the source is unchanged
        }
      }

      const int64_t total = sum_over_ranks(tokens_held(compressed));
      const int64_t planned = plan_tokens(plan);
      EXPECT_EQ(total, planned);
      EXPECT_EQ(sum_over_ranks(tokens_held(copy)), planned);
      EXPECT_LE(planned, n_layers() * n_heads() * budget);
      if (uniform_allocator(method)) {
        EXPECT_EQ(planned, n_layers() * n_heads() * budget);
      }
      const auto bytes = static_cast<uint64_t>(sum_over_ranks(static_cast<int64_t>(compressed.bytes_held())));
      EXPECT_EQ(bytes, static_cast<uint64_t>(total) * bytes_per_token());
      EXPECT_EQ(static_cast<uint64_t>(sum_over_ranks(static_cast<int64_t>(copy.bytes_held()))), bytes);
      EXPECT_EQ(static_cast<uint64_t>(sum_over_ranks(static_cast<int64_t>(compressed.full_bytes()))),
                static_cast<uint64_t>(n_layers() * n_heads() * n_prompt()) *
                    kvstore::HeadSegment::bytes_per_token(sharded_->model->config().head_dim,
                                                          kernels::KvDtype::kF16));  // counted at 16 bits
      if (coordinator()) {
        std::printf("  %-12s %3lld tokens/head: %lld tokens held over all ranks (cap %lld), %.2f MiB\n",
                    method.c_str(), static_cast<long long>(budget), static_cast<long long>(total),
                    static_cast<long long>(n_layers() * n_heads() * budget),
                    static_cast<double>(bytes) / 1048576.0);
      }
    }
  }
}

// 2b. Dimension-level methods: every rank's heads hold exactly their planned tokens at their planned
// ranks (rank head_dim as full-dimension tokens), bytes are counted per coefficient and stay within
// the budget's bytes.
void CompressionPlanTest::check_dimension_compression(const std::string& method, KvCompressor& c,
                                                      const engine::CompressionPlan& plan, int64_t budget) {
  const int64_t owned = prompt_kv_->owned_kv_heads();
  const int64_t first_head = sharded_->model->shard().kv_heads.begin;
  const int64_t d = sharded_->model->config().head_dim;
  auto compressed = full_copy(*prompt_kv_);
  ASSERT_TRUE(c.compress(compressed, budget));
  const auto copy = c.compressed_copy(*prompt_kv_, budget);
  uint64_t planned_bytes = 0;  // this rank's heads
  for (int64_t layer = 0; layer < n_layers(); ++layer) {
    for (int64_t h = 0; h < owned; ++h) {
      const auto index = static_cast<size_t>(layer * n_heads() + first_head + h);
      std::vector<std::pair<int32_t, int32_t>> expected;
      for (size_t i = 0; i < plan.kept[index].size(); ++i) {
        expected.emplace_back(plan.kept[index][i],
                              std::min<int32_t>(plan.ranks[index][i], static_cast<int32_t>(d)));
        planned_bytes +=
            kvstore::LowRankBlock::bytes_per_token(expected.back().second, sharded_->model->kv_dtype());
      }
      EXPECT_EQ(held_ranks(compressed.head(layer, h)), expected) << "layer " << layer << " head " << h;
      EXPECT_EQ(held_ranks(copy.head(layer, h)), expected) << "layer " << layer << " head " << h;
    }
  }
  EXPECT_EQ(compressed.bytes_held(), planned_bytes);
  EXPECT_EQ(copy.bytes_held(), planned_bytes);
  const auto bytes = static_cast<uint64_t>(sum_over_ranks(static_cast<int64_t>(compressed.bytes_held())));
  EXPECT_LE(bytes, static_cast<uint64_t>(n_layers() * n_heads() * budget) * bytes_per_token());
  EXPECT_EQ(sum_over_ranks(all_tokens_held(compressed)), plan_tokens(plan.kept));
  if (coordinator()) {
    std::printf(
        "  %-13s %3lld tokens/head: %lld tokens held at mixed ranks, %.2f MiB = %.1f%% of the budget's "
        "bytes\n",
        method.c_str(), static_cast<long long>(budget), static_cast<long long>(plan_tokens(plan.kept)),
        static_cast<double>(bytes) / 1048576.0,
        100.0 * static_cast<double>(bytes) /
            static_cast<double>(static_cast<uint64_t>(n_layers() * n_heads() * budget) * bytes_per_token()));
  }
}

// 3. Greedy tokens with the prompt compressed after prefill equal the one-rank ones.
TEST_F(CompressionPlanTest, GreedyGenerationEqualsOneRank) {
  auto& comm = testing::mpi_communicator();
  engine::Generator generator(*sharded_->model, *sharded_->tokenizer, comm, kContextSize);
  std::unique_ptr<engine::Generator> reference;
  if (coordinator()) {
    reference = std::make_unique<engine::Generator>(*reference_->model, *reference_->tokenizer, *self_comm_,
                                                    kContextSize);
  }
  std::vector<TokenId> full_kv;  // the uncompressed answer, for the printout
  {
    auto kv = full_copy(*context_kv_);
    full_kv = generator.generate(kv, question(), kGreedyTokens, {}, nullptr).tokens;
  }
  for (const auto& method : methods()) {
    // The first budget as tokens, the second as a fraction that generate() resolves itself.
    for (size_t k = 0; k < budgets().size(); ++k) {
      const int64_t budget = budgets()[k];
      const int64_t as_tokens = k == 0 ? budget : 0;
      const double as_fraction = k == 0 ? 0.0 : kBudgetFractions[k];
      SCOPED_TRACE(method + " at " + std::to_string(budget) + " tokens per head");
      if (dynakv_below_floor(method, budget)) continue;
      auto c = sharded_compressor(method, budget);
      auto kv = full_copy(*context_kv_);
      const auto result = generator.generate(kv, question(), kGreedyTokens, {}, nullptr,
                                             engine::KvCompression{c.get(), as_tokens, as_fraction, 0});
      EXPECT_EQ(result.prompt_tokens, kQuestionTokens);
      // Compressed once, after prefill: the plan's tokens plus the generated ones (fed back).
      EXPECT_LE(sum_over_ranks(tokens_held(kv)),
                n_layers() * n_heads() * (budget + static_cast<int64_t>(result.tokens.size()) - 1));
      if (!coordinator()) continue;
      auto rc = reference_compressor(method, budget);
      auto ref_kv = full_copy(*ref_context_kv_);
      const auto expected = reference->generate(ref_kv, question(), kGreedyTokens, {}, nullptr,
                                                engine::KvCompression{rc.get(), as_tokens, as_fraction, 0});
      EXPECT_EQ(result.tokens, expected.tokens);
      EXPECT_FALSE(result.tokens.empty());
      std::printf("  %-12s %3lld tokens/head (%s): %zu tokens %s one rank, %s full KV\n", method.c_str(),
                  static_cast<long long>(budget), k == 0 ? "budget_tokens" : "budget_fraction",
                  result.tokens.size(), result.tokens == expected.tokens ? "equal to" : "DIFFER from",
                  result.tokens == full_kv ? "same as" : "differ from");
    }
  }
}

// 4. With every = 4 the store goes back to the budget during decode, on every rank.
TEST_F(CompressionPlanTest, DecodeTimeCompressionKeepsTheBudget) {
  auto& comm = testing::mpi_communicator();
  const int64_t budget = budgets()[0];
  engine::Generator generator(*sharded_->model, *sharded_->tokenizer, comm, kContextSize);
  std::unique_ptr<engine::Generator> reference;
  if (coordinator()) {
    reference = std::make_unique<engine::Generator>(*reference_->model, *reference_->tokenizer, *self_comm_,
                                                    kContextSize);
  }
  for (const auto& method : methods()) {
    // Dimension-level methods compress once after prefill; dynakv's decode-time ranking has its test.
    if (kvstore::is_dimension_method(method)) continue;
    SCOPED_TRACE(method + " at " + std::to_string(budget) + " tokens per head, every " +
                 std::to_string(kEvery) + " steps");
    auto c = sharded_compressor(method, budget);
    auto kv = full_copy(*context_kv_);
    const engine::KvCompression compression{c.get(), budget, 0.0, kEvery};
    const auto result = generator.generate(kv, question(), kDecodeTokens, {}, nullptr, compression);
    ASSERT_EQ(static_cast<int64_t>(result.tokens.size()), kDecodeTokens)
        << engine::finish_reason_name(result.stop_reason);
    EXPECT_EQ(kv.next_position(), n_prompt() + kDecodeTokens - 1);  // the last token is not fed back
    const int64_t most = max_over_ranks(kv.max_head_tokens());
    const int64_t total = sum_over_ranks(tokens_held(kv));
    EXPECT_LT(most, n_prompt());  // re-compacted, far below the positions seen
    EXPECT_LE(total, n_layers() * n_heads() * (budget + kEvery));
    // Uniform allocators give every head the same budget; the others move tokens between heads.
    if (uniform_allocator(method)) {
      EXPECT_LE(most, budget + kEvery);
    }
    EXPECT_EQ(static_cast<uint64_t>(sum_over_ranks(static_cast<int64_t>(kv.bytes_held()))),
              static_cast<uint64_t>(total) * bytes_per_token());
    if (!coordinator()) continue;
    auto rc = reference_compressor(method, budget);
    auto ref_kv = full_copy(*ref_context_kv_);
    const auto expected = reference->generate(ref_kv, question(), kDecodeTokens, {}, nullptr,
                                              engine::KvCompression{rc.get(), budget, 0.0, kEvery});
    EXPECT_EQ(result.tokens, expected.tokens);
    std::printf("  %-12s %3lld tokens/head, every %lld: most in a head %lld, mean %.1f; tokens %s one rank\n",
                method.c_str(), static_cast<long long>(budget), static_cast<long long>(kEvery),
                static_cast<long long>(most),
                static_cast<double>(total) / static_cast<double>(n_layers() * n_heads()),
                result.tokens == expected.tokens ? "equal to" : "DIFFER from");
  }
}

// 4b. DynaKV during decode (every 4 steps): the full-dimension tokens that arrived since are ranked by
// the importance predictor at the budget's share of bytes; nothing is evicted; tokens equal one rank.
TEST_F(CompressionPlanTest, DynaKvRanksDecodeTokens) {
  auto& comm = testing::mpi_communicator();
  const int64_t budget = budgets()[1];
  engine::Generator generator(*sharded_->model, *sharded_->tokenizer, comm, kContextSize);
  auto c = sharded_compressor("dynakv", budget);
  auto kv = full_copy(*context_kv_);
  const auto result = generator.generate(kv, question(), kDecodeTokens, {}, nullptr,
                                         engine::KvCompression{c.get(), 0, kBudgetFractions[1], kEvery});
  ASSERT_EQ(static_cast<int64_t>(result.tokens.size()), kDecodeTokens);
  const int64_t positions = n_prompt() + kDecodeTokens - 1;
  EXPECT_EQ(sum_over_ranks(all_tokens_held(kv)), n_layers() * n_heads() * positions);  // no eviction
  // Full-dimension tokens left: the window, the top-ranked ones and at most kEvery - 1 new ones per head.
  const auto bytes = static_cast<double>(sum_over_ranks(static_cast<int64_t>(kv.bytes_held())));
  // full KV counts 16-bit bytes; budgets count tokens, which this suite's f32 store holds at
  // f32_per_16 times the bytes
  const auto full = static_cast<double>(sum_over_ranks(static_cast<int64_t>(kv.full_bytes())));
  const double f32_per_16 = static_cast<double>(bytes_per_token()) /
                            static_cast<double>(kvstore::HeadSegment::bytes_per_token(
                                sharded_->model->config().head_dim, kernels::KvDtype::kF16));
  EXPECT_LE(bytes, (kBudgetFractions[1] + 0.03) * full * f32_per_16);
  EXPECT_LT(sum_over_ranks(tokens_held(kv)), n_layers() * n_heads() * positions / 2);
  if (!coordinator()) return;
  engine::Generator reference(*reference_->model, *reference_->tokenizer, *self_comm_, kContextSize);
  auto rc = reference_compressor("dynakv", budget);
  auto ref_kv = full_copy(*ref_context_kv_);
  const auto expected = reference.generate(ref_kv, question(), kDecodeTokens, {}, nullptr,
                                           engine::KvCompression{rc.get(), 0, kBudgetFractions[1], kEvery});
  EXPECT_EQ(result.tokens, expected.tokens);
  std::printf(
      "  dynakv %.0f%%, every %lld: %.1f%% of full KV bytes (at f32) after %lld decode steps; tokens %s one "
      "rank\n",
      100 * kBudgetFractions[1], static_cast<long long>(kEvery), 100.0 * bytes / full / f32_per_16,
      static_cast<long long>(kDecodeTokens), result.tokens == expected.tokens ? "equal to" : "DIFFER from");
}

}  // namespace
}  // namespace kvshrink
