#include "launch/bench_command.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/model/llama_model.h"
#include "launch/cpu_environment.h"
#include "launch/loaded_model.h"
#include "launch/model_options.h"

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
  std::vector<double> tokens_per_second;  // one per repetition
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

// Runs one repetition on every rank; returns tokens/s of the timed part (same on every rank).
double run_case(engine::LlamaModel& model, const BenchCase& test, std::mt19937_64& rng,
                comm::Communicator& comm) {
  const int64_t vocab = model.config().vocab_size;
  std::uniform_int_distribution<engine::TokenId> random_token(0, static_cast<engine::TokenId>(vocab - 1));
  const auto random_tokens = [&](int64_t n) {
    std::vector<engine::TokenId> ids(static_cast<size_t>(n));
    for (auto& id : ids) id = random_token(rng);
    return ids;
  };
  auto kv = model.make_kv_store();
  kv.reserve(test.depth + test.prompt + test.generate);
  if (test.depth > 0) model.forward(random_tokens(test.depth), kv, engine::LogitsFor::kLastToken);
  const auto timed_tokens = random_tokens(std::max(test.prompt, test.generate));
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  if (test.prompt > 0) {
    model.forward(timed_tokens, kv, engine::LogitsFor::kLastToken);
  } else {
    for (int64_t i = 0; i < test.generate; ++i) {
      model.forward(std::span(timed_tokens).subspan(i, 1), kv, engine::LogitsFor::kLastToken);
    }
  }
  comm.barrier();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(test.prompt + test.generate) / seconds;
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
  return cmd;
}

int run_bench(const BenchOptions& options, comm::Communicator& comm) {
  auto loaded = load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const int64_t context = context_size_or_default(options.context_size, model.config(), comm);
  const auto cases = bench_cases(options);
  for (const auto& test : cases) {
    comm::check_all(comm, test.depth + test.prompt + test.generate <= context,
                    fmt::format("test {} needs {} positions but the context holds {} (see --ctx-size)",
                                test.name, test.depth + test.prompt + test.generate, context));
  }

  std::mt19937_64 rng(options.seed);
  std::vector<BenchResult> results;
  for (const auto& test : cases) {
    BenchResult result{test, {}};
    run_case(model, test, rng, comm);  // warm-up, not counted (as llama-bench)
    for (int r = 0; r < options.repetitions; ++r)
      result.tokens_per_second.push_back(run_case(model, test, rng, comm));
    results.push_back(result);
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
  fmt::print("| model | backend | ranks | threads/rank | test | t/s | peak RSS per rank (MiB) |\n");
  fmt::print("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : results) {
    fmt::print("| {} | {} | {} | {} | {} | {:.2f} ± {:.2f} | {} |\n", model_name, loaded.backend->name(),
               size, compute_threads(), r.test.name, r.mean(), r.stddev(), fmt::join(rss_text, " / "));
  }
  return 0;
}

}  // namespace kvshrink::launch
