#include "launch/bench_command.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/compression_spec.h"
#include "engine/model/llama_model.h"
#include "engine/model/loaded_model.h"
#include "launch/cpu_environment.h"
#include "launch/model_options.h"
#include "launch/process_memory.h"

namespace kvshrink::launch {
namespace {

struct BenchCase {
  std::string name;  // "pp512", "tg128", "pp512 @ d4096"
  int64_t prompt = 0;
  int64_t generate = 0;
  int64_t depth = 0;
};

struct BenchResult {
  BenchCase test;
  std::string setting;                    // "full KV", "snapkv 6%"
  std::vector<double> tokens_per_second;  // one per repetition
  double kv_share = 1.0;                  // KV bytes held / full after the timed part (all ranks)
  double attention_ms_per_token = 0.0;    // rank 0's attention time in the timed part
  double mean() const {
    return std::accumulate(tokens_per_second.begin(), tokens_per_second.end(), 0.0) /
           tokens_per_second.size();
  }
  double stddev() const {
    if (tokens_per_second.size() < 2) return 0.0;
    const double average = mean();
    double sum = 0.0;
    for (double v : tokens_per_second) sum += (v - average) * (v - average);
    return std::sqrt(sum / (tokens_per_second.size() - 1));
  }
};

std::vector<BenchCase> bench_cases(const BenchOptions& o) {
  std::vector<BenchCase> cases;
  for (int64_t depth : o.depths) {
    const std::string suffix = depth > 0 ? fmt::format(" @ d{}", depth) : "";
    for (int64_t n : o.prompt_sizes) cases.push_back({fmt::format("pp{}{}", n, suffix), n, 0, depth});
    for (int64_t n : o.generate_sizes) cases.push_back({fmt::format("tg{}{}", n, suffix), 0, n, depth});
  }
  return cases;
}

// The depth context of a test, prefilled once and shared by the repetitions and settings: each
// repetition times its part on a copy (compressed for a press). A second base store that tracks
// accumulated attention is prefilled only when a press needs it (H2O), so the others do not pay.
class DepthContext {
 public:
  DepthContext(engine::LlamaModel& model, const std::vector<engine::TokenId>& tokens,
               const kvstore::KvStoreOptions& needs)
      : plain_(model.make_kv_store({.query_window = needs.query_window})) {
    if (needs.track_attention_mass) with_mass_.emplace(model.make_kv_store(needs));
    if (tokens.empty()) return;
    model.forward(tokens, plain_, engine::LogitsFor::kLastToken);
    if (with_mass_) model.forward(tokens, *with_mass_, engine::LogitsFor::kLastToken);
  }
  const kvstore::KvStore& base(bool mass) const { return mass ? with_mass_.value() : plain_; }

 private:
  kvstore::KvStore plain_;
  std::optional<kvstore::KvStore> with_mass_;
};

struct CaseRun {
  double tokens_per_second = 0.0;
  double kv_share = 1.0;
  double attention_ms_per_token = 0.0;
};

// Runs one repetition on every rank; returns the timed part's tokens/s (same on every rank). With
// a compression setting, the depth context is compressed before the timed part, and decode
// re-compacts as the setting says.
CaseRun run_case(engine::LlamaModel& model, const BenchCase& test, const DepthContext& depth,
                 std::mt19937_64& rng, comm::Communicator& comm, const engine::CompressionSpec& spec,
                 engine::KvCompressor* compressor) {
  const int64_t vocab = model.config().vocab_size;
  std::uniform_int_distribution<engine::TokenId> random_token(0, static_cast<engine::TokenId>(vocab - 1));
  std::vector<engine::TokenId> timed_tokens(static_cast<size_t>(std::max(test.prompt, test.generate)));
  for (auto& id : timed_tokens) id = random_token(rng);
  const bool mass = compressor && compressor->store_options().track_attention_mass;
  const int64_t budget = compressor ? spec.budget_tokens_for(test.depth) : 0;
  auto kv = compressor && test.depth > 0 ? compressor->compressed_copy(depth.base(mass), budget)
                                         : depth.base(mass).copy();
  comm.barrier();
  model.reset_attention_seconds();
  const auto start = std::chrono::steady_clock::now();
  if (test.prompt > 0) {
    model.forward(timed_tokens, kv, engine::LogitsFor::kLastToken);
  } else {
    for (int64_t i = 0; i < test.generate; ++i) {
      model.forward(std::span(timed_tokens).subspan(i, 1), kv, engine::LogitsFor::kLastToken);
      if (compressor && test.depth > 0 && spec.compress_every > 0 && (i + 1) % spec.compress_every == 0) {
        compressor->compress(kv, budget);
      }
    }
  }
  comm.barrier();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<float> bytes = {static_cast<float>(kv.bytes_held()), static_cast<float>(kv.full_bytes())};
  comm.all_reduce_sum(bytes);
  const auto timed = static_cast<double>(test.prompt + test.generate);
  return {timed / seconds, bytes[1] > 0 ? bytes[0] / bytes[1] : 1.0, 1e3 * model.attention_seconds() / timed};
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  auto* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput (like llama-bench)");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size);
  cmd->add_option("-p,--n-prompt", o.prompt_sizes, "Prompt sizes to prefill (comma separated)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("-n,--n-gen", o.generate_sizes, "Numbers of tokens to decode (comma separated)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("-d,--depth", o.depths, "Context depths to run each test after (comma separated)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("-r,--repetitions", o.repetitions, "Repetitions of each test")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("-o,--output", o.output, "Output format")
      ->capture_default_str()
      ->check(CLI::IsMember({"md", "json"}));
  cmd->add_option("--seed", o.seed, "Seed of the random token ids")->capture_default_str();
  add_compression_options(*cmd, o.compression, /*several=*/true);
  return cmd;
}

int run_bench(const BenchOptions& options, comm::Communicator& comm) {
  auto loaded = engine::load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const int64_t context = engine::context_size_or_default(options.context_size, model.config(), comm);
  const auto cases = bench_cases(options);
  for (const auto& test : cases) {
    comm::check_all(comm, test.depth + test.prompt + test.generate <= context,
                    fmt::format("test {} needs {} positions but the context holds {} (see --ctx-size)",
                                test.name, test.depth + test.prompt + test.generate, context));
  }

  // Full KV first, then every press x budget; each depth context is prefilled once.
  auto specs = compression_specs(options.compression, comm);
  if (specs.front().enabled()) specs.insert(specs.begin(), engine::CompressionSpec{});
  std::vector<std::unique_ptr<engine::KvCompressor>> compressors;
  kvstore::KvStoreOptions needs;  // what the presses of this run need from the depth context
  for (const auto& spec : specs) {
    compressors.push_back(
        spec.enabled() ? engine::make_compressor(spec, model, comm, loaded.path, loaded.identity) : nullptr);
    if (compressors.back()) needs = kvstore::covering(needs, compressors.back()->store_options());
  }
  std::mt19937_64 rng(options.seed);
  std::vector<BenchResult> results;
  for (int64_t depth_tokens : options.depths) {
    std::uniform_int_distribution<engine::TokenId> random_token(
        0, static_cast<engine::TokenId>(model.config().vocab_size - 1));
    std::vector<engine::TokenId> tokens(static_cast<size_t>(depth_tokens));
    for (auto& id : tokens) id = random_token(rng);
    const DepthContext depth(model, tokens, needs);
    for (size_t s = 0; s < specs.size(); ++s) {
      for (const auto& test : cases) {
        if (test.depth != depth_tokens) continue;
        BenchResult result{test, specs[s].label(), {}, 0.0, 0.0};
        run_case(model, test, depth, rng, comm, specs[s], compressors[s].get());  // warm-up (as llama-bench)
        for (int r = 0; r < options.repetitions; ++r) {
          const auto run = run_case(model, test, depth, rng, comm, specs[s], compressors[s].get());
          result.tokens_per_second.push_back(run.tokens_per_second);
          result.kv_share += run.kv_share / options.repetitions;
          result.attention_ms_per_token += run.attention_ms_per_token / options.repetitions;
        }
        results.push_back(result);
      }
    }
  }

  // Peak RSS of every rank, gathered to all.
  const int size = comm.world().size;
  std::vector<float> rss(static_cast<size_t>(size));
  const float own_rss = static_cast<float>(peak_rss_bytes()) / 1048576.0f;
  comm.all_gather(std::span<const float>(&own_rss, 1), rss, std::vector<int64_t>(size, 1));
  if (!comm.world().is_coordinator()) return 0;

  const auto& c = model.config();
  const std::string model_name = std::filesystem::path(options.model).filename().string();
  if (options.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : results) {
      out.push_back({{"model", model_name},
                     {"ranks", size},
                     {"threads_per_rank", compute_threads()},
                     {"test", r.test.name},
                     {"kv", r.setting},
                     {"kv_share", r.kv_share},
                     {"attention_ms_per_token_rank0", r.attention_ms_per_token},
                     {"n_prompt", r.test.prompt},
                     {"n_gen", r.test.generate},
                     {"n_depth", r.test.depth},
                     {"tokens_per_second", r.tokens_per_second},
                     {"avg_ts", r.mean()},
                     {"stddev_ts", r.stddev()},
                     {"peak_rss_mib_per_rank", rss},
                     {"n_layers", c.n_layers},
                     {"n_embd", c.n_embd}});
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  std::vector<std::string> rss_text;
  for (float mib : rss) rss_text.push_back(fmt::format("{:.0f}", mib));
  fmt::print(
      "| model | backend | ranks | threads/rank | KV | test | t/s | KV held | attention ms/token (rank 0) | "
      "peak RSS per rank (MiB) |\n");
  fmt::print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : results) {
    fmt::print("| {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} | {:.1f}% | {:.3f} | {} |\n", model_name,
               loaded.backend->name(), size, compute_threads(), r.setting, r.test.name, r.mean(), r.stddev(),
               100 * r.kv_share, r.attention_ms_per_token, fmt::join(rss_text, " / "));
  }
  return 0;
}

}  // namespace kvshrink::launch
