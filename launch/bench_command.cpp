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
#include "engine/serving/engine.h"
#include "launch/cpu_environment.h"
#include "launch/engine_options.h"
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

// The timed part of one repetition, from the engine's timestamps: ppN from its first rows to its
// first token; tgN over N decode steps after its first token.
double tokens_per_second(const BenchCase& test, const engine::RequestResult& r) {
  if (test.prompt > 0) return static_cast<double>(test.prompt) / (r.first_token_seconds - r.start_seconds);
  const auto n = static_cast<size_t>(test.generate);
  return static_cast<double>(n) / (r.token_seconds.at(n) - r.token_seconds.at(0));
}

std::vector<engine::TokenId> random_tokens(int64_t n, int64_t vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<engine::TokenId> random_token(0, static_cast<engine::TokenId>(vocab - 1));
  std::vector<engine::TokenId> tokens(static_cast<size_t>(n));
  for (auto& id : tokens) id = random_token(rng);
  return tokens;
}

// Every setting's warm-up and repetitions of one test, as results [setting][1 + repetitions]. At
// depth D, one request prefills the D tokens once and every run is a fork of it (compressed under
// its setting; one at a time, as the engine runs at most one sequence here), timed without the
// copy; at depth 0 every run is a request of its own, at full KV (nothing to compress yet).
std::vector<std::vector<engine::RequestResult>> run_test(engine::Engine& engine, const BenchCase& test,
                                                         const std::vector<engine::CompressionSpec>& specs,
                                                         int repetitions, std::mt19937_64& rng) {
  const int64_t vocab = engine.model().config().vocab_size;
  const auto runs = static_cast<size_t>(repetitions + 1);
  engine::Request request;
  request.ignore_eos = true;
  request.max_tokens = test.prompt > 0 ? 1 : test.generate + 1;
  const auto timed = random_tokens(std::max<int64_t>(test.prompt, 1), vocab, rng);
  std::vector<std::vector<engine::RequestResult>> out(specs.size());
  if (test.depth == 0) {
    request.prompt = timed;
    for (size_t s = 0; s < specs.size(); ++s) {
      for (size_t r = 0; r < runs; ++r) {
        auto results = engine.run({request});
        if (!results.empty()) out[s].push_back(results[0]);
      }
    }
    return out;
  }
  request.prompt = random_tokens(test.depth, vocab, rng);
  if (test.prompt > 0) request.continuation = timed;
  for (const auto& spec : specs) request.forks.insert(request.forks.end(), runs, spec);
  const auto results = engine.run({request});
  if (results.empty()) return out;
  for (size_t s = 0; s < specs.size(); ++s)
    out[s].assign(results[0].forks.begin() + s * runs, results[0].forks.begin() + (s + 1) * runs);
  return out;
}

// The repetitions of one test under one setting ([0], the warm-up as in llama-bench, left out).
BenchResult summarize(const BenchCase& test, const std::string& setting,
                      const std::vector<engine::RequestResult>& runs) {
  BenchResult result{test, setting, {}, 0.0, 0.0};
  const auto repetitions = static_cast<double>(runs.size() - 1);
  for (size_t r = 1; r < runs.size(); ++r) {
    const auto& run = runs[r];
    result.tokens_per_second.push_back(tokens_per_second(test, run));
    const double share =
        run.kv_bytes_full > 0 ? static_cast<double>(run.kv_bytes_held) / run.kv_bytes_full : 1.0;
    result.kv_share += share / repetitions;
    result.attention_ms_per_token +=
        1e3 * run.attention_seconds / static_cast<double>(test.prompt + test.generate) / repetitions;
  }
  return result;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  auto* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput (like llama-bench)");
  add_engine_options(*cmd, o.engine);
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

int run_bench(const BenchOptions& options, comm::Communicator& comm, comm::Communicator& data) {
  auto specs = compression_specs(options.compression, comm);
  engine::EngineOptions engine_options = options.engine;
  engine_options.max_num_seqs = 1;  // one sequence at a time, as llama-bench
  engine::Engine engine(engine_options, comm, data);
  const int64_t context = engine.context_size();
  const auto cases = bench_cases(options);
  for (const auto& test : cases) {
    comm::check_all(comm, test.depth + test.prompt + test.generate < context,
                    fmt::format("test {} needs {} positions but the context holds {} (see --ctx-size)",
                                test.name, test.depth + test.prompt + test.generate + 1, context));
  }
  // Full KV first, then every press x budget (compressors loaded now: a bad side file stops here).
  if (specs.front().enabled()) specs.insert(specs.begin(), engine::CompressionSpec{});
  for (const auto& spec : specs) {
    if (spec.enabled()) engine.compressor(spec);
  }
  std::mt19937_64 rng(options.seed);
  std::vector<BenchResult> results;  // per depth: every setting's tests, as before the engine
  for (const int64_t depth : options.depths) {
    std::vector<std::pair<BenchCase, std::vector<std::vector<engine::RequestResult>>>> tests;
    for (const auto& test : cases) {
      if (test.depth == depth)
        tests.emplace_back(test, run_test(engine, test, specs, options.repetitions, rng));
    }
    std::string error;  // a run that failed (rank 0 knows): the job stops with it
    for (const auto& [test, runs] : tests) {
      for (const auto& setting : runs) {
        for (const auto& run : setting) {
          if (run.finish == engine::FinishReason::kError && error.empty())
            error = fmt::format("test {}: {}", test.name, run.error);
        }
      }
    }
    comm::check_all(comm, error.empty(), error);
    if (!comm.world().is_coordinator()) continue;
    for (size_t s = 0; s < specs.size(); ++s) {
      for (const auto& [test, runs] : tests) results.push_back(summarize(test, specs[s].label(), runs[s]));
    }
  }

  // Peak RSS of every rank, gathered to all.
  const int size = comm.world().size;
  std::vector<float> rss(static_cast<size_t>(size));
  const float own_rss = static_cast<float>(peak_rss_bytes()) / 1048576.0f;
  comm.all_gather(std::span<const float>(&own_rss, 1), rss, std::vector<int64_t>(size, 1));
  if (!comm.world().is_coordinator()) return 0;

  const auto& c = engine.model().config();
  const std::string model_name = std::filesystem::path(options.engine.model).filename().string();
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
               engine.loaded().backend->name(), size, compute_threads(), r.setting, r.test.name, r.mean(),
               r.stddev(), 100 * r.kv_share, r.attention_ms_per_token, fmt::join(rss_text, " / "));
  }
  return 0;
}

}  // namespace kvshrink::launch
