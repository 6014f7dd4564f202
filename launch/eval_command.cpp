#include "launch/eval_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
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

// One press x budget of this run, with its compressor (none for full KV).
struct EvalSetting {
  engine::CompressionSpec spec;
  std::unique_ptr<engine::KvCompressor> compressor;
  std::string label;
};

// Identifies a record for resuming: the same sample (task, length, depth, seed index), mode, setting.
std::string record_key(const std::string& sample_id, const std::string& mode, const std::string& label) {
  return sample_id + "|" + mode + "|" + label;
}

std::string sample_id(const eval::EvalSample& sample, size_t index) {
  return fmt::format("{}|{}|{}|{}", sample.task, sample.context_length, sample.depth_percent, index);
}

std::vector<json> read_records(const std::filesystem::path& file) {
  std::vector<json> records;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      records.push_back(json::parse(line));
    } catch (const json::exception&) {
      // a line cut by an interrupted run: that record is run again
    }
  }
  return records;
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

// summary.json rows and results.md tables from every record in samples.jsonl.
void write_summary(const std::filesystem::path& out) {
  struct Aggregate {
    double score = 0.0, kv_share = 0.0;
    int64_t count = 0;
  };
  using Key = std::tuple<std::string, std::string, int64_t, std::string>;  // task, mode, length, label
  std::map<Key, Aggregate> groups;
  std::map<std::string, Aggregate> full_by_task;  // full-KV score over every length and mode
  std::map<std::string, std::string> method_of;   // label -> press
  for (const auto& r : read_records(out / "samples.jsonl")) {
    const std::string label = r.value("setting", "full KV");
    auto& g = groups[{r["task"], r["mode"], r["context_length"], label}];
    g.score += r["score"].get<double>();
    // KV held right after compression (the budget at work); older records: at the end
    const bool has_compressed = r.contains("kv_bytes_full_compressed");
    const double full = r[has_compressed ? "kv_bytes_full_compressed" : "kv_bytes_full"].get<double>();
    const double held = r[has_compressed ? "kv_bytes_held_compressed" : "kv_bytes_held"].get<double>();
    g.kv_share += full > 0 ? held / full : 1.0;
    ++g.count;
    method_of[label] = r.value("press", "none");
    if (label == "full KV") {
      auto& f = full_by_task[r["task"]];
      f.score += r["score"].get<double>();
      ++f.count;
    }
  }
  // Tasks the model cannot do at full KV (mean < 5 %) stay out of the headline average.
  std::set<std::string> informative;
  for (const auto& [task, f] : full_by_task) {
    if (f.score / f.count >= 0.05) informative.insert(task);
  }
  json summary = json::array();
  std::string table =
      "| task | mode | context length | samples | score, full KV | setting | KV held | score | % of full |\n"
      "|---|---|---:|---:|---:|---|---:|---:|---:|\n";
  using AverageKey = std::tuple<std::string, int64_t, std::string>;  // mode, length, label
  std::map<AverageKey, std::array<double, 4>> averages;              // score, kv share, full score, tasks
  for (const auto& [key, g] : groups) {
    const auto& [task, mode, length, label] = key;
    const double score = g.score / g.count;
    const double kv_share = g.kv_share / g.count;
    const auto full_it = groups.find({task, mode, length, "full KV"});
    const double full = full_it == groups.end() ? -1.0 : full_it->second.score / full_it->second.count;
    const std::string of_full = full > 0 ? fmt::format("{:.0f}%", 100 * score / full) : "-";
    summary.push_back({{"task", task},
                       {"mode", mode},
                       {"context_length", length},
                       {"setting", label},
                       {"press", method_of[label]},
                       {"samples", g.count},
                       {"score", score},
                       {"score_full_kv", full},
                       {"kv_share", kv_share}});
    table += fmt::format("| {} | {} | {} | {} | {} | {} | {:.1f}% | {:.1f} | {} |\n", task, mode, length,
                         g.count, full >= 0 ? fmt::format("{:.1f}", 100 * full) : "-", label, 100 * kv_share,
                         100 * score, of_full);
    if (informative.count(task) && full >= 0) {
      auto& a = averages[{mode, length, label}];
      a[0] += score, a[1] += kv_share, a[2] += full, a[3] += 1;
    }
  }
  std::string headline = fmt::format(
      "Average over the tasks the model does at full KV ({}); % of full = average score / average full-KV "
      "score.\n\n"
      "| mode | context length | setting | tasks | KV held | score | score, full KV | % of full |\n"
      "|---|---:|---|---:|---:|---:|---:|---:|\n",
      informative.empty() ? std::string("none") : fmt::format("{}", fmt::join(informative, ", ")));
  for (const auto& [key, a] : averages) {
    const auto& [mode, length, label] = key;
    headline += fmt::format("| {} | {} | {} | {:.0f} | {:.1f}% | {:.1f} | {:.1f} | {} |\n", mode, length,
                            label, a[3], 100 * a[1] / a[3], 100 * a[0] / a[3], 100 * a[2] / a[3],
                            a[2] > 0 ? fmt::format("{:.0f}%", 100 * a[0] / a[2]) : "-");
  }
  std::ofstream(out / "summary.json") << summary.dump(2) << '\n';
  std::ofstream(out / "results.md") << headline << "\n" << table;
  fmt::print("{}\n{}", headline, table);
}

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
  cmd->add_option(
         "--max-new-tokens", o.max_new_tokens,
         "Cap on the answer length (0 = each task's own: RULER 128 for NIAH, ...); greedy answers are "
         "the same up to the cap")
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

int run_eval(const EvalOptions& options, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  auto specs = compression_specs(options.compression, comm);
  auto loaded = load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const int64_t context = context_size_or_default(options.context_size, model.config(), comm);

  // Settings: every press x budget, then full KV (run last, on the prefilled store itself).
  std::vector<EvalSetting> settings;
  kvstore::KvStoreOptions store_options;  // what every press of the run needs from the shared prefill
  for (auto& spec : specs) {
    if (!spec.enabled()) continue;
    EvalSetting setting{spec, engine::make_compressor(spec, model, comm, loaded.path, loaded.identity),
                        spec.label()};
    store_options = kvstore::covering(store_options, setting.compressor->store_options());
    settings.push_back(std::move(setting));
  }
  settings.push_back({engine::CompressionSpec{}, nullptr, "full KV"});

  // Task generation can fail on bad input (unknown task, missing LongBench file): agreed by all.
  std::vector<eval::EvalSample> samples;
  std::set<std::string> finished;  // record keys already in samples.jsonl (rank 0)
  const auto records_path = std::filesystem::path(options.out) / "samples.jsonl";
  std::string error;
  if (coordinator) {
    try {
      samples = build_samples(options, *loaded.tokenizer);
      std::filesystem::create_directories(options.out);
      for (const auto& r : read_records(records_path)) {
        finished.insert(
            record_key(r.value("sample_id", ""), r.value("mode", ""), r.value("setting", "full KV")));
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
  const auto n_samples = comm.broadcast_value<uint64_t>(samples.size(), 0);
  if (coordinator && !finished.empty()) {
    fmt::print(stderr, "kvshrink eval: {} records already in {}; finished ones are skipped\n",
               finished.size(), records_path.string());
  }

  std::vector<std::string> modes = {options.mode};
  if (options.mode == "both") modes = {"query-aware", "query-agnostic"};
  std::ofstream records;
  if (coordinator) records.open(records_path, std::ios::app);
  engine::Generator generator(model, *loaded.tokenizer, comm, context);
  const Progress progress(static_cast<int64_t>(n_samples * modes.size()));
  int64_t done = 0, ran = 0;

  for (uint64_t i = 0; i < n_samples; ++i) {
    for (const auto& mode : modes) {
      ++done;
      const bool agnostic = mode == "query-agnostic";
      // Which settings still lack a record for this (sample, mode): decided by rank 0.
      std::vector<uint8_t> todo(settings.size(), 1);
      std::string id;
      if (coordinator) {
        id = sample_id(samples[i], i);
        for (size_t s = 0; s < settings.size(); ++s)
          todo[s] = !finished.count(record_key(id, mode, settings[s].label));
      }
      comm.broadcast_values(std::span<uint8_t>(todo), 0);
      if (std::find(todo.begin(), todo.end(), 1) == todo.end()) continue;
      ++ran;

      EncodedSample encoded;
      int64_t max_new_tokens = 0;
      if (coordinator) {
        encoded = encode(samples[i], *loaded.tokenizer, agnostic);
        max_new_tokens = options.max_new_tokens > 0
                             ? std::min<int64_t>(options.max_new_tokens, samples[i].max_new_tokens)
                             : samples[i].max_new_tokens;
        // Too long for the context: cut the middle of the context part, as LongBench does.
        const int64_t room = context - max_new_tokens - static_cast<int64_t>(encoded.question.size());
        if (static_cast<int64_t>(encoded.context.size()) > room && room >= 2) {
          encoded.context = eval::truncate_middle(encoded.context, static_cast<size_t>(room));
        }
      }
      max_new_tokens = comm.broadcast_value(max_new_tokens, 0);
      // One prefill per (sample, mode): the whole prompt (query-aware) or the context alone.
      auto kv = model.make_kv_store(store_options);
      const auto prefilled = generator.prefill(kv, encoded.context, max_new_tokens);
      const int64_t compressed_positions = kv.next_position();

      for (size_t s = 0; s < settings.size(); ++s) {
        if (!todo[s]) continue;
        auto& setting = settings[s];
        engine::KvCompression compression;
        std::optional<kvstore::KvStore> copy;
        if (setting.compressor) {
          compression = {setting.compressor.get(), setting.spec.budget_tokens_for(compressed_positions), 0.0,
                         setting.spec.compress_every};
          copy.emplace(setting.compressor->compressed_copy(kv, compression.budget_tokens));
        }
        kvstore::KvStore& store = copy ? *copy : kv;  // full KV runs last, on the prefilled store
        const uint64_t compressed_held = store.bytes_held(), compressed_full = store.full_bytes();
        engine::GenerationResult result;
        if (agnostic) {
          const auto question = generator.prefill(store, encoded.question, max_new_tokens);
          result = generator.decode(store, question, max_new_tokens, {}, nullptr, compression);
        } else {
          result = generator.decode(store, prefilled, max_new_tokens, {}, nullptr, compression);
        }
        std::vector<float> kv_bytes = {
            static_cast<float>(result.kv_bytes_held), static_cast<float>(result.kv_bytes_full),
            static_cast<float>(compressed_held), static_cast<float>(compressed_full)};
        comm.all_reduce_sum(kv_bytes);
        if (!coordinator) continue;

        const auto& sample = samples[i];
        std::vector<TokenId> answer = result.tokens;
        if (!answer.empty() && loaded.tokenizer->is_end_of_generation(answer.back())) answer.pop_back();
        const std::string prediction = loaded.tokenizer->decode(answer);
        const int64_t prompt_tokens = static_cast<int64_t>(encoded.context.size() + encoded.question.size());
        json record = {
            {"task", sample.task},
            {"mode", mode},
            {"sample_id", id},
            {"context_length", sample.context_length},
            {"depth", sample.depth_percent},
            {"prompt_tokens", prompt_tokens},
            {"answers", sample.answers},
            {"prediction", prediction},
            {"score", eval::score(sample, prediction)},
            {"setting", setting.label},
            {"press", setting.spec.method},
            {"allocator", setting.compressor && setting.compressor->allocator()
                              ? std::string(setting.compressor->allocator()->name())
                              : ""},
            {"budget_fraction", setting.spec.budget_fraction},
            {"budget_tokens", compression.budget_tokens},
            {"kv_bytes_held", kv_bytes[0]},  // at the end of the answer
            {"kv_bytes_full", kv_bytes[1]},
            {"kv_bytes_held_compressed", kv_bytes[2]},  // right after compression
            {"kv_bytes_full_compressed", kv_bytes[3]}};
        records << record.dump() << '\n' << std::flush;
      }
      if (coordinator) {
        progress.report(done, ran,
                        fmt::format("{} {} len {} depth {}", samples[i].task, mode, samples[i].context_length,
                                    samples[i].depth_percent));
      }
    }
  }
  if (coordinator) {
    records.close();
    write_summary(options.out);
  }
  return 0;
}

}  // namespace kvshrink::launch
