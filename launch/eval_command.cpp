#include "launch/eval_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/serving/engine.h"
#include "engine/tokenizer/chat_template.h"
#include "eval/eval_sample.h"
#include "eval/longbench.h"
#include "eval/output_file.h"
#include "eval/records_file.h"
#include "eval/results_summary.h"
#include "eval/synthetic_tasks.h"
#include "launch/cli_checks.h"
#include "launch/engine_options.h"
#include "launch/model_options.h"
#include "launch/output_path.h"
#include "launch/process_memory.h"

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

// One press x budget of this run (method "none": full KV), as records name it.
struct EvalSetting {
  engine::CompressionSpec spec;
  std::string label;
  std::string allocator;  // the allocator's name, "" for full KV
};

// Identifies a record for resuming: the same sample (task, length, depth, seed index), mode, setting.
std::string record_key(const std::string& sample_id, const std::string& mode, const std::string& label) {
  return sample_id + "|" + mode + "|" + label;
}

std::string sample_id(const eval::EvalSample& sample, size_t index) {
  return fmt::format("{}|{}|{}|{}", sample.task, sample.context_length, sample.depth_percent, index);
}

// Progress of long runs on stderr: done/total, rate and ETA.
class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  void report(int64_t done, int64_t ran, const std::string& what) const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = ran > 0 ? ran / elapsed : 0.0;  // units run (not skipped) per second
    const double eta = rate > 0 ? (total_ - done) / rate : 0.0;
    fmt::print(stderr, "kvshrink eval: [{}/{}] {} | {:.2f} prompts/min, elapsed {:.0f} s, ETA {:.0f} s\n",
               done, total_, what, 60 * rate, elapsed, eta);
  }

 private:
  int64_t total_;
  std::chrono::steady_clock::time_point start_;
};

// A sample's prompt in one mode as the model gets it, cut to fit the context, and its answer cap.
struct Prompt {
  EncodedSample tokens;
  int64_t max_new_tokens = 0;
};

// The fewest answer tokens that can hold every reference answer (each with a few tokens of list
// markup around it, as the model writes ":\n\n- <answer>\n"), at most the task's own cap. A
// --max-new-tokens below it would score 0 whatever the model does: a uuid is ~40 tokens in
// SmolLM2's tokenizer (one per character or two), so niah_single_3 under --max-new-tokens 32 was
// cut mid-uuid.
int64_t answer_floor(const eval::EvalSample& sample, const engine::Tokenizer& tokenizer) {
  int64_t tokens = 4;
  for (const auto& answer : sample.answers) {
    tokens += static_cast<int64_t>(tokenizer.encode(" " + answer, /*parse_special=*/false).size()) + 4;
  }
  return std::min<int64_t>(tokens, sample.max_new_tokens);
}

Prompt make_prompt(const eval::EvalSample& sample, const engine::Tokenizer& tokenizer, bool agnostic,
                   int64_t context, int64_t max_new_tokens) {
  Prompt prompt{encode(sample, tokenizer, agnostic),
                max_new_tokens > 0
                    ? std::min<int64_t>(std::max(max_new_tokens, answer_floor(sample, tokenizer)),
                                        sample.max_new_tokens)
                    : sample.max_new_tokens};
  // Too long for the context: cut the middle of the context part, as LongBench does.
  auto& part = prompt.tokens.context;
  const int64_t room = context - prompt.max_new_tokens - static_cast<int64_t>(prompt.tokens.question.size());
  if (static_cast<int64_t>(part.size()) > room && room >= 2) {
    part = eval::truncate_middle(part, static_cast<size_t>(room));
  }
  return prompt;
}

// What rank 0 runs: every sample, and its prompt in each mode ([sample * modes + mode]).
struct EvalPlan {
  std::vector<eval::EvalSample> samples;
  std::vector<Prompt> prompts;
};

// Throws for bad task input, and for a budget that a setting cannot meet on some prompt (the part a
// press compresses is the prompt's context part: the whole prompt when query-aware).
EvalPlan make_plan(const EvalOptions& o, const std::vector<std::string>& modes,
                   const std::vector<EvalSetting>& settings, const engine::Tokenizer& tokenizer,
                   int64_t context) {
  EvalPlan plan{build_samples(o, tokenizer), {}};
  for (const auto& sample : plan.samples) {
    for (const auto& mode : modes) {
      plan.prompts.push_back(
          make_prompt(sample, tokenizer, mode == "query-agnostic", context, o.max_new_tokens));
      const auto compressed = static_cast<int64_t>(plan.prompts.back().tokens.context.size());
      for (const auto& setting : settings) engine::check_budget_reachable(setting.spec, compressed);
    }
  }
  return plan;
}

// Runs work on rank 0; a failure there is a comm::JobError on every rank.
template <typename Work>
void on_coordinator(comm::Communicator& comm, Work work) {
  std::string error;
  if (comm.world().is_coordinator()) {
    try {
      work();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
}

// Rank 0, before any model work: the output folder with its files writable, samples.jsonl's torn
// last line dropped. Returns the keys of the records samples.jsonl holds.
std::set<std::string> open_out_folder(const std::filesystem::path& out) {
  std::filesystem::create_directories(out);
  for (const char* name : {"samples.jsonl", "summary.json", "results.md"}) check_output_file(out / name);
  const auto path = out / "samples.jsonl";
  if (const size_t cut = eval::drop_torn_last_line(path); cut > 0) {
    fmt::print(stderr,
               "kvshrink eval: warning: dropped the torn last line of {} ({} bytes, cut by an interrupted "
               "run); its record runs again\n",
               path.string(), cut);
  }
  std::set<std::string> finished;
  for (const auto& r : eval::read_records(path)) {
    finished.insert(record_key(r["sample_id"], r["mode"], r.value("setting", "full KV")));
  }
  if (!finished.empty()) {
    fmt::print(stderr, "kvshrink eval: {} records already in {}; finished ones are skipped\n",
               finished.size(), path.string());
  }
  return finished;
}

// What the run shares: the settings ([0] full KV, the request itself; the others its forks) and,
// on rank 0, the plan, the finished records and samples.jsonl.
struct EvalRun {
  std::vector<std::string> modes;
  std::vector<EvalSetting> settings;
  EvalPlan plan;
  std::set<std::string> finished;
  std::optional<eval::AppendFile> records;
  std::string write_error;    // the first failed write: the rest of the run stops
  int64_t failed = 0;         // variants that ended in an error (no record)
  int64_t done = 0, ran = 0;  // (sample, mode) pairs ended, and those of them that ran
};

// One samples.jsonl record: the sample in one mode under one setting, its answer and score, and the
// KV bytes over all ranks ([held, full] at the end of the answer, then right after compression).
json make_record(const EvalRun& run, const engine::Tokenizer& tokenizer, size_t sample_index,
                 const std::string& mode, const Prompt& prompt, const engine::RequestResult& result,
                 const EvalSetting& setting) {
  const auto& sample = run.plan.samples[sample_index];
  std::vector<TokenId> answer = result.tokens;
  if (!answer.empty() && tokenizer.is_end_of_generation(answer.back())) answer.pop_back();
  const std::string prediction = tokenizer.decode(answer);
  return {
      {"task", sample.task},
      {"mode", mode},
      {"sample_id", sample_id(sample, sample_index)},
      {"context_length", sample.context_length},
      {"depth", sample.depth_percent},
      {"prompt_tokens", static_cast<int64_t>(prompt.tokens.context.size() + prompt.tokens.question.size())},
      {"answers", sample.answers},
      {"prediction", prediction},
      {"score", eval::score(sample, prediction)},
      {"setting", setting.label},
      {"press", setting.spec.method},
      {"allocator", setting.allocator},
      {"budget_fraction", setting.spec.budget_fraction},
      {"budget_tokens", result.budget_tokens},
      {"kv_bytes_held", result.kv_bytes_held},
      {"kv_bytes_full", result.kv_bytes_full},
      {"kv_bytes_held_compressed", result.kv_bytes_compressed},
      {"kv_bytes_full_compressed", result.kv_bytes_full_compressed}};
}

// Every press x budget (its compressor loaded now, collectively: a bad side file stops the run
// before any prompt runs), after full KV.
std::vector<EvalSetting> make_settings(const std::vector<engine::CompressionSpec>& specs,
                                       engine::Engine& engine) {
  std::vector<EvalSetting> settings = {{engine::CompressionSpec{}, "full KV", ""}};
  for (const auto& spec : specs) {
    if (!spec.enabled()) continue;
    const auto* allocator = engine.compressor(spec).allocator();
    settings.push_back({spec, spec.label(), allocator ? std::string(allocator->name()) : ""});
  }
  return settings;
}

// Rank 0: one request per (sample, mode) with a setting that lacks a record: the prompt prefilled
// once (query-agnostic: the context; the question is its continuation), full KV itself, every
// other setting a fork. Each variant's record is appended as it ends.
std::vector<engine::Request> make_requests(EvalRun& run, const engine::Engine& engine,
                                           const Progress& progress) {
  std::vector<engine::Request> requests;
  for (size_t i = 0; i < run.plan.samples.size(); ++i) {
    for (size_t m = 0; m < run.modes.size(); ++m) {
      const std::string& mode = run.modes[m];
      const Prompt& prompt = run.plan.prompts[i * run.modes.size() + m];
      const std::string id = sample_id(run.plan.samples[i], i);
      std::vector<size_t> todo;  // settings lacking a record, as forks (full KV runs anyway)
      bool any = !run.finished.contains(record_key(id, mode, run.settings[0].label));
      engine::Request r;
      for (size_t s = 1; s < run.settings.size(); ++s) {
        if (run.finished.contains(record_key(id, mode, run.settings[s].label))) continue;
        todo.push_back(s);
        r.forks.push_back(run.settings[s].spec);
        any = true;
      }
      if (!any) {
        ++run.done;
        continue;
      }
      r.prompt = prompt.tokens.context;
      r.continuation = prompt.tokens.question;
      r.max_tokens = prompt.max_new_tokens;
      r.on_token = [&run](TokenId) { return run.write_error.empty(); };
      auto left = std::make_shared<size_t>(todo.size() + 1);  // variants still running
      r.on_finish = [&run, &engine, &progress, i, m, todo, left](size_t variant,
                                                                 const engine::RequestResult& result) {
        const auto& setting = run.settings[variant == 0 ? 0 : todo[variant - 1]];
        const std::string& mode = run.modes[m];
        const std::string id = sample_id(run.plan.samples[i], i);
        if (result.finish == engine::FinishReason::kError) {
          ++run.failed;
          fmt::print(stderr, "kvshrink eval: error: {} {} {}: {}\n", id, mode, setting.label, result.error);
        } else if (run.write_error.empty() && !run.finished.contains(record_key(id, mode, setting.label))) {
          try {
            const auto& prompt = run.plan.prompts[i * run.modes.size() + m];
            run.records->append_line(
                make_record(run, engine.tokenizer(), i, mode, prompt, result, setting).dump());
          } catch (const std::exception& e) {
            run.write_error = e.what();
          }
        }
        if (--*left > 0) return;
        ++run.done;
        ++run.ran;
        const auto& sample = run.plan.samples[i];
        progress.report(run.done, run.ran,
                        fmt::format("{} {} len {} depth {}", sample.task, mode, sample.context_length,
                                    sample.depth_percent));
      };
      requests.push_back(std::move(r));
    }
  }
  return requests;
}

bool has_synthetic_task(const EvalOptions& o) {
  return std::any_of(o.tasks.begin(), o.tasks.end(),
                     [](const std::string& task) { return task.rfind(kLongBenchPrefix, 0) != 0; });
}

// Rank 0: summary.json and results.md from every record, written and checked, the tables printed.
void write_summary(const std::filesystem::path& out) {
  const auto tables = eval::summarize(eval::read_records(out / "samples.jsonl"));
  eval::write_file(out / "summary.json", tables.summary.dump(2) + "\n");
  eval::write_file(out / "results.md", tables.markdown);
  fmt::print("{}", tables.markdown);
}

}  // namespace

CLI::App* add_eval_command(CLI::App& app, EvalOptions& o) {
  auto* cmd =
      app.add_subcommand("eval", "Score long-context tasks (RULER-style synthetic, LongBench) on the model");
  add_engine_options(*cmd, o.engine);
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
      ->check(finite_in(0.0, 100.0));
  cmd->add_option("--samples", o.samples, "Samples per (task, length, depth); LongBench: records per dataset")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o.seed, "Seed of the task generators")
      ->capture_default_str()
      ->check(non_negative_integer());
  cmd->add_option("--mode", o.mode,
                  "query-aware: the question is in the prefilled prompt; query-agnostic: "
                  "the context is prefilled alone, the question comes after")
      ->capture_default_str()
      ->check(CLI::IsMember({"query-aware", "query-agnostic", "both"}));
  cmd->add_option(
         "--max-new-tokens", o.max_new_tokens,
         "Cap on the answer length (0 = each task's own: RULER 128 for NIAH, ...), never below what the "
         "reference answers need; greedy answers are the same up to the cap")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--longbench-dir", o.longbench_dir, "Folder with LongBench <dataset>.jsonl files");
  cmd->add_option("-o,--out", o.out,
                  "Output folder (samples.jsonl, summary.json, results.md); re-running with the same folder "
                  "skips finished records")
      ->required();
  add_compression_options(*cmd, o.compression, /*several=*/true);
  return cmd;
}

int run_eval(const EvalOptions& options, comm::Communicator& comm, comm::Communicator& data) {
  const auto specs = compression_specs(options.compression, comm);
  const std::filesystem::path out(options.out);
  std::set<std::string> finished;
  on_coordinator(comm, [&] { finished = open_out_folder(out); });
  engine::Engine engine(options.engine, comm, data);
  const int64_t context = engine.context_size();
  if (has_synthetic_task(options)) check_context_lengths(options.context_lengths, context, comm);

  std::vector<std::string> modes = {options.mode};
  if (options.mode == "both") modes = {"query-aware", "query-agnostic"};
  EvalRun run{modes, make_settings(specs, engine), {}, std::move(finished), std::nullopt, {}, 0, 0, 0};
  on_coordinator(comm, [&] {
    run.plan = make_plan(options, modes, run.settings, engine.tokenizer(), context);
    run.records.emplace(out / "samples.jsonl");
  });
  // Every (sample, mode) at once: the scheduler runs as many as the KV pool holds, each prompt's
  // settings decoded together as forks of one prefill.
  const Progress progress(static_cast<int64_t>(run.plan.samples.size() * modes.size()));
  engine.run(comm.world().is_coordinator() ? make_requests(run, engine, progress)
                                           : std::vector<engine::Request>{});
  comm::check_all(comm, run.write_error.empty(), run.write_error);
  on_coordinator(comm, [&] {
    run.records->close();
    write_summary(out);
  });
  const auto failed = comm.broadcast_value(run.failed, 0);
  comm::check_all(comm, failed == 0,
                  fmt::format("{} record(s) failed (their errors are above); the others are in {}", failed,
                              (out / "samples.jsonl").string()));
  return 0;
}

}  // namespace kvshrink::launch
