#include "launch/bench_throughput_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/serving/throughput_summary.h"
#include "launch/engine_options.h"

namespace kvshrink::launch {
namespace {

// Rank 0: the requests' prompts and output lengths, synthetic or from the JSONL dataset.
std::vector<engine::Request> make_requests(const BenchThroughputOptions& o,
                                           const engine::Tokenizer& tokenizer, int64_t vocab) {
  std::vector<engine::Request> out;
  if (o.dataset.empty()) {
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<engine::TokenId> token(0, static_cast<engine::TokenId>(vocab - 1));
    for (int64_t i = 0; i < o.num_prompts; ++i) {
      engine::Request r;
      r.prompt.resize(static_cast<size_t>(o.input_len));
      for (auto& id : r.prompt) id = token(rng);
      r.max_tokens = o.output_len;
      out.push_back(std::move(r));
    }
    return out;
  }
  std::ifstream in(o.dataset);
  if (!in) throw std::runtime_error(fmt::format("cannot read --dataset '{}'", o.dataset));
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
      throw std::runtime_error(
          fmt::format("{}:{}: expected {{\"prompt\": text[, \"max_tokens\": n]}}", o.dataset, number));
    }
    engine::Request r;
    r.prompt = tokenizer.encode(j["prompt"].get<std::string>());
    r.max_tokens = j.value("max_tokens", o.output_len);
    out.push_back(std::move(r));
    if (static_cast<int64_t>(out.size()) == o.num_prompts) break;
  }
  return out;
}

// One line on stderr, at most once a second: finished requests and output tokens so far.
class Progress {
 public:
  Progress(std::string label, int64_t total) : label_(std::move(label)), total_(total) {}
  void token() {
    ++tokens_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::seconds(1)) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    fmt::print(stderr, "\r[{}] {} output tokens of about {} in {:.0f} s ({:.1f} tokens/s)   ", label_,
               tokens_, total_, seconds, tokens_ / seconds);
  }
  void done() const { fmt::print(stderr, "\n"); }

 private:
  std::string label_;
  int64_t total_;
  int64_t tokens_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

nlohmann::json to_json(const std::string& setting, const engine::ThroughputSummary& s) {
  return {{"setting", setting},
          {"requests", s.requests},
          {"failed", s.failed},
          {"input_tokens", s.input_tokens},
          {"output_tokens", s.output_tokens},
          {"seconds", s.seconds},
          {"requests_per_second", s.requests_per_second},
          {"output_tokens_per_second", s.output_tokens_per_second},
          {"total_tokens_per_second", s.total_tokens_per_second},
          {"decode_tokens_per_second", s.decode_tokens_per_second},
          {"mean_running", s.mean_running},
          {"peak_running", s.peak_running},
          {"kv_pool_peak_mib", s.pool_peak_bytes / 1048576.0},
          {"kv_pool_capacity_mib", s.pool_capacity_bytes / 1048576.0},
          {"kv_share_after_compression", s.kv_share},
          {"preemptions", s.preemptions},
          {"ttft_p50_s", s.ttft_p50},
          {"ttft_p99_s", s.ttft_p99},
          {"tpot_p50_ms", 1e3 * s.tpot_p50},
          {"tpot_p99_ms", 1e3 * s.tpot_p99}};
}

void print_markdown(const std::vector<std::pair<std::string, engine::ThroughputSummary>>& rows) {
  fmt::print(
      "| setting | req/s | output tok/s | total tok/s | decode tok/s | running mean | running peak | KV pool "
      "peak MiB | KV "
      "after "
      "press | preempted | TTFT p50 s | TTFT p99 s | TPOT p50 ms | TPOT p99 ms | failed |\n"
      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const auto& [setting, s] : rows) {
    fmt::print(
        "| {} | {:.3f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {} | {:.1f} of {:.0f} | {:.1f}% | {} | {:.2f} | "
        "{:.2f} | "
        "{:.1f} "
        "| {:.1f} | {} |\n",
        setting, s.requests_per_second, s.output_tokens_per_second, s.total_tokens_per_second,
        s.decode_tokens_per_second, s.mean_running, s.peak_running, s.pool_peak_bytes / 1048576.0,
        s.pool_capacity_bytes / 1048576.0, 100 * s.kv_share, s.preemptions, s.ttft_p50, s.ttft_p99,
        1e3 * s.tpot_p50, 1e3 * s.tpot_p99, s.failed);
  }
}

}  // namespace

CLI::App* add_bench_throughput_command(CLI::App& app, BenchThroughputOptions& o) {
  auto* cmd = app.add_subcommand(
      "bench-throughput",
      "Throughput of many requests at once under a KV memory cap (like vllm bench throughput)");
  add_engine_options(*cmd, o.engine);
  cmd->add_option("--input-len", o.input_len, "Prompt tokens of each synthetic request")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--output-len", o.output_len, "Tokens each request generates (end-of-generation ignored)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--num-prompts", o.num_prompts, "Requests")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--dataset", o.dataset,
                  "JSONL of prompts: {\"prompt\": text[, \"max_tokens\": n]} per line");
  cmd->add_option("-o,--output", o.output, "Output format")
      ->capture_default_str()
      ->check(CLI::IsMember({"md", "json"}));
  cmd->add_option("--seed", o.seed, "Seed of the synthetic prompts")->capture_default_str();
  cmd->add_flag("--skip-full-kv", o.skip_full_kv, "Run only the --press settings, not full KV first");
  add_compression_options(*cmd, o.compression, /*several=*/true);
  return cmd;
}

int run_bench_throughput(const BenchThroughputOptions& options, comm::Communicator& control,
                         comm::Communicator& data) {
  const bool coordinator = control.world().is_coordinator();
  auto specs = compression_specs(options.compression, control);
  const auto full_kv = [](const engine::CompressionSpec& s) { return !s.enabled(); };
  if (options.skip_full_kv) {
    std::erase_if(specs, full_kv);
  } else if (std::none_of(specs.begin(), specs.end(), full_kv)) {
    specs.insert(specs.begin(), engine::CompressionSpec{});  // full KV first
  }
  comm::check_all(control, !specs.empty(), "--skip-full-kv without --press leaves nothing to run");
  engine::Engine engine(options.engine, control, data);
  std::vector<engine::Request> base;
  std::string error;
  if (coordinator) {
    try {
      base = make_requests(options, engine.tokenizer(), engine.model().config().vocab_size);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(control, error.empty(), error);
  std::vector<std::pair<std::string, engine::ThroughputSummary>> rows;
  for (const auto& spec : specs) {
    Progress progress(spec.label(), static_cast<int64_t>(base.size()) * options.output_len);
    auto requests = base;
    for (auto& r : requests) {
      r.compression = spec;
      r.ignore_eos = true;
      r.on_token = [&](engine::TokenId) {
        progress.token();
        return true;
      };
    }
    const auto results = engine.run(std::move(requests));
    if (!coordinator) continue;
    progress.done();
    for (const auto& r : results) {
      if (r.finish == engine::FinishReason::kError)
        fmt::print(stderr, "kvshrink: request failed: {}\n", r.error);
    }
    rows.emplace_back(spec.label(), engine::summarize(results, engine.last_run()));
  }
  if (!coordinator) return 0;
  if (options.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [setting, s] : rows) out.push_back(to_json(setting, s));
    fmt::print("{}\n", out.dump(2));
  } else {
    print_markdown(rows);
  }
  return 0;
}

}  // namespace kvshrink::launch
