#include "launch/eval_command.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/generation/generator.h"
#include "engine/tokenizer/chat_template.h"
#include "eval/eval_sample.h"
#include "eval/longbench.h"
#include "eval/synthetic_tasks.h"
#include "launch/loaded_model.h"
#include "launch/model_options.h"

namespace kvshrink::launch {
namespace {

using engine::TokenId;
using nlohmann::json;

constexpr const char* kLongBenchPrefix = "longbench/";

// A sample as token ids, split where a press will compress: the context part (chat-template head +
// context) and the question part (question, end of turn, assistant start, answer prefix).
struct EncodedSample {
  std::vector<TokenId> context;
  std::vector<TokenId> question;
};

EncodedSample encode(const eval::EvalSample& sample, const engine::Tokenizer& tokenizer, bool split) {
  const std::string full =
      engine::render_chatml({{"user", sample.context + sample.question}}) + sample.answer_prefix;
  const size_t context_end = full.find(sample.context) + sample.context.size();
  if (!split) return {tokenizer.encode(full), {}};
  return {tokenizer.encode(full.substr(0, context_end)), tokenizer.encode(full.substr(context_end))};
}

// Rank 0 builds every sample; the others get only the count (they never need the text).
std::vector<eval::EvalSample> build_samples(const EvalOptions& o, const engine::Tokenizer& tokenizer) {
  const eval::TokenCounter count_tokens = [&](std::string_view text) {
    return static_cast<int64_t>(tokenizer.encode(text, /*parse_special=*/false).size());
  };
  std::vector<eval::EvalSample> samples;
  for (const auto& task : o.tasks) {
    if (task.rfind(kLongBenchPrefix, 0) == 0) {
      auto records = eval::read_longbench(o.longbench_dir, task.substr(std::string(kLongBenchPrefix).size()),
                                          static_cast<size_t>(o.samples));
      samples.insert(samples.end(), records.begin(), records.end());
      continue;
    }
    for (int64_t length : o.context_lengths) {
      for (double depth : o.depths) {
        bool has_needle = true;
        for (int i = 0; i < o.samples; ++i) {
          const uint64_t seed = o.seed * 1000003u + static_cast<uint64_t>(i);
          samples.push_back(eval::make_synthetic_sample(task, length, depth, seed, count_tokens));
          has_needle = samples.back().depth_percent >= 0;
        }
        if (!has_needle) break;  // vt, cwe, fwe: depth means nothing, one round of samples
      }
    }
  }
  return samples;
}

struct Aggregate {
  double score_sum = 0.0;
  double kv_share_sum = 0.0;
  int64_t count = 0;
};

}  // namespace

CLI::App* add_eval_command(CLI::App& app, EvalOptions& o) {
  auto* cmd =
      app.add_subcommand("eval", "Score long-context tasks (RULER-style synthetic, LongBench) on the model");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size);
  cmd->add_option("-t,--task", o.tasks, "Tasks (comma separated): synthetic names, or longbench/<dataset>")
      ->required()
      ->delimiter(',');
  cmd->add_option("--context-lengths", o.context_lengths, "Prompt lengths in tokens (synthetic tasks)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{64}, int64_t{1} << 24));
  cmd->add_option("--depths", o.depths, "Needle depths in percent (needle tasks)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--samples", o.samples, "Samples per (task, length, depth); LongBench: records per dataset")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o.seed, "Seed of the task generators")->capture_default_str();
  cmd->add_option("--mode", o.mode,
                  "query-aware: the question is in the prefilled prompt; query-agnostic: "
                  "the context is prefilled alone, the question comes after")
      ->capture_default_str()
      ->check(CLI::IsMember({"query-aware", "query-agnostic", "both"}));
  cmd->add_option("--longbench-dir", o.longbench_dir, "Folder with LongBench <dataset>.jsonl files");
  cmd->add_option("-o,--out", o.out, "Output folder (samples.jsonl, summary.json, results.md)")->required();
  return cmd;
}

int run_eval(const EvalOptions& options, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  auto loaded = load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const int64_t context = context_size_or_default(options.context_size, model.config(), comm);

  // Task generation can fail on bad input (unknown task, missing LongBench file): agreed by all.
  std::vector<eval::EvalSample> samples;
  std::string error;
  if (coordinator) {
    try {
      samples = build_samples(options, *loaded.tokenizer);
      std::filesystem::create_directories(options.out);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
  const auto n_samples = comm.broadcast_value<uint64_t>(samples.size(), 0);

  std::vector<std::string> modes = {options.mode};
  if (options.mode == "both") modes = {"query-aware", "query-agnostic"};
  std::ofstream records;
  if (coordinator) records.open(std::filesystem::path(options.out) / "samples.jsonl");
  std::map<std::tuple<std::string, std::string, int64_t>, Aggregate> aggregates;  // (task, mode, length)
  engine::Generator generator(model, *loaded.tokenizer, comm, context);

  for (uint64_t i = 0; i < n_samples; ++i) {
    for (const auto& mode : modes) {
      const bool agnostic = mode == "query-agnostic";
      EncodedSample encoded;
      int64_t max_new_tokens = 0;
      if (coordinator) {
        encoded = encode(samples[i], *loaded.tokenizer, agnostic);
        max_new_tokens = samples[i].max_new_tokens;
        // Too long for the context: cut the middle of the context part, as LongBench does.
        const int64_t room = context - max_new_tokens - static_cast<int64_t>(encoded.question.size());
        if (static_cast<int64_t>(encoded.context.size()) > room && room >= 2) {
          encoded.context = eval::truncate_middle(encoded.context, static_cast<size_t>(room));
        }
      }
      auto kv = model.make_kv_store();
      engine::GenerationResult result;
      if (agnostic) {
        comm.broadcast_vector(encoded.context, 0);  // generate() broadcasts its own prompt
        model.forward(encoded.context, kv, engine::LogitsFor::kLastToken);  // compression goes here
        result = generator.generate(kv, encoded.question, max_new_tokens, {}, nullptr);
      } else {
        result = generator.generate(kv, encoded.context, max_new_tokens, {}, nullptr);
      }
      std::vector<float> kv_bytes = {static_cast<float>(result.kv_bytes_held),
                                     static_cast<float>(result.kv_bytes_full)};
      comm.all_reduce_sum(kv_bytes);
      if (!coordinator) continue;

      const auto& sample = samples[i];
      std::vector<TokenId> answer = result.tokens;
      if (!answer.empty() && loaded.tokenizer->is_end_of_generation(answer.back())) answer.pop_back();
      const std::string prediction = loaded.tokenizer->decode(answer);
      const double score = eval::score(sample, prediction);
      const int64_t prompt_tokens = static_cast<int64_t>(encoded.context.size() + encoded.question.size());
      records << json{{"task", sample.task},
                      {"mode", mode},
                      {"context_length", sample.context_length},
                      {"depth", sample.depth_percent},
                      {"prompt_tokens", prompt_tokens},
                      {"answers", sample.answers},
                      {"prediction", prediction},
                      {"score", score},
                      {"press", "none"},
                      {"kv_bytes_held", kv_bytes[0]},
                      {"kv_bytes_full", kv_bytes[1]}}
                     .dump()
              << '\n'
              << std::flush;
      auto& aggregate = aggregates[{sample.task, mode, sample.context_length}];
      aggregate.score_sum += score;
      aggregate.kv_share_sum += kv_bytes[1] > 0 ? kv_bytes[0] / kv_bytes[1] : 1.0;
      ++aggregate.count;
      fmt::print(stderr, "kvshrink eval: {}/{} {} {} len {} depth {}: score {:.2f}\n", i + 1, n_samples,
                 sample.task, mode, sample.context_length, sample.depth_percent, score);
    }
  }
  if (!coordinator) return 0;

  json summary = json::array();
  std::string table =
      "| task | mode | context length | samples | score, full KV | KV held "
      "|\n|---|---|---:|---:|---:|---:|\n";
  for (const auto& [key, aggregate] : aggregates) {
    const auto& [task, mode, length] = key;
    const double mean = aggregate.score_sum / aggregate.count;
    const double kv_share = aggregate.kv_share_sum / aggregate.count;
    summary.push_back({{"task", task},
                       {"mode", mode},
                       {"context_length", length},
                       {"samples", aggregate.count},
                       {"press", "none"},
                       {"score", mean},
                       {"kv_share", kv_share}});
    table += fmt::format("| {} | {} | {} | {} | {:.1f} | {:.0f}% |\n", task, mode, length, aggregate.count,
                         100 * mean, 100 * kv_share);
  }
  std::ofstream(std::filesystem::path(options.out) / "summary.json") << summary.dump(2) << '\n';
  std::ofstream(std::filesystem::path(options.out) / "results.md") << table;
  fmt::print("{}", table);
  return 0;
}

}  // namespace kvshrink::launch
