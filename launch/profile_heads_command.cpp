#include "launch/profile_heads_command.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/head_profile_file.h"
#include "engine/profiling/needle_probe.h"
#include "engine/profiling/retrieval_head_profile.h"
#include "engine/serving/engine.h"
#include "eval/synthetic_tasks.h"
#include "launch/cli_checks.h"
#include "launch/model_options.h"
#include "launch/output_path.h"

namespace kvshrink::launch {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rank 0: every probe, its text from eval's synthetic tasks; each must fit the context. Throws
// std::runtime_error with the message to report.
std::vector<engine::NeedleProbe> build_probes(const ProfileHeadsOptions& o,
                                              const engine::Tokenizer& tokenizer, int64_t context) {
  const eval::TokenCounter count_tokens = [&](std::string_view text) {
    return static_cast<int64_t>(tokenizer.encode(text, /*parse_special=*/false).size());
  };
  const engine::NeedleTextMaker make_text = [&](const engine::NeedleRequest& request) {
    const auto sample = eval::make_synthetic_sample(request.task, request.context_length,
                                                    request.depth_percent, request.seed, count_tokens);
    return engine::NeedleText{.user = sample.context + sample.question,
                              .answer_prefix = sample.answer_prefix,
                              .value = sample.answers.at(0)};
  };
  const engine::NeedleProbeSet set{
      .context_lengths = o.context_lengths, .depths = o.depths, .samples = o.samples, .seed = o.seed};
  auto probes = engine::build_needle_probes(set, make_text, tokenizer);
  if (probes.empty())
    throw std::runtime_error("profile-heads: no probes (give --context-lengths and --depths)");
  for (const auto& probe : probes) {
    const auto tokens = static_cast<int64_t>(probe.prompt.size() + probe.answer.size());
    if (tokens > context) {
      throw std::runtime_error(
          fmt::format("profile-heads: probe '{}' needs {} tokens but the context holds {}", probe.label,
                      tokens, context));
    }
  }
  return probes;
}

// Rank 0: the mean score and the strongest heads, as "layer.head score".
void print_scores(const engine::RetrievalHeadScores& scores, int64_t n_kv_heads, int ranks, double seconds) {
  std::string best;
  for (const size_t head : engine::strongest_heads(scores.scores, 8)) {
    best += fmt::format(" {}.{} {:.4f}", head / n_kv_heads, head % n_kv_heads, scores.scores[head]);
  }
  const double sum = std::accumulate(scores.scores.begin(), scores.scores.end(), 0.0);
  fmt::print(stderr,
             "kvshrink profile-heads: {} probes, {} ranks, {:.1f} s; mean head score {:.4f}, top "
             "(layer.head):{}\n",
             scores.probes, ranks, seconds, sum / static_cast<double>(scores.scores.size()), best);
}

}  // namespace

CLI::App* add_profile_heads_command(CLI::App& app, ProfileHeadsOptions& o) {
  auto* cmd = app.add_subcommand(
      "profile-heads",
      "Score every (layer, kv head) for retrieval (HeadKV-R2) and write the headkv head profile");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size, o.backend);
  cmd->add_option("-o,--out", o.out, "Profile file (default: <model without .gguf>.heads.gguf)");
  cmd->add_option("--context-lengths", o.context_lengths, "Probe prompt lengths in tokens")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{64}, int64_t{1} << 24));
  cmd->add_option("--depths", o.depths, "Needle depths in percent")
      ->delimiter(',')
      ->capture_default_str()
      ->check(finite_in(0.0, 100.0));
  cmd->add_option("--samples", o.samples,
                  fmt::format("Probes per (length, depth), alternating {} and {}",
                              engine::kNeedleProbeTasks[0], engine::kNeedleProbeTasks[1]))
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o.seed, "Seed of the probe generator")
      ->capture_default_str()
      ->check(non_negative_integer());
  return cmd;
}

int run_profile_heads(const ProfileHeadsOptions& options, comm::Communicator& comm,
                      comm::Communicator& data) {
  const bool coordinator = comm.world().is_coordinator();
  const auto start = std::chrono::steady_clock::now();
  const std::string out =
      options.out.empty() ? engine::default_head_profile_path(options.model).string() : options.out;
  check_output_file(out, comm);
  engine::Engine engine({.model = options.model,
                         .context_size = options.context_size,
                         .max_num_batched_tokens = options.batch_size,
                         .backend = options.backend},
                        comm, data);
  const auto& loaded = engine.loaded();
  auto& model = engine.model();
  const auto& config = model.config();
  const int64_t context = engine.context_size();
  check_context_lengths(options.context_lengths, context, comm);

  std::vector<engine::NeedleProbe> probes;
  std::string error;
  if (coordinator) {
    try {
      probes = build_probes(options, *loaded.tokenizer, context);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);

  auto probe_start = std::chrono::steady_clock::now();
  const engine::ProbeDone print_probe = [&](uint64_t i, uint64_t n, const engine::NeedleProbe& probe) {
    fmt::print(stderr,
               "kvshrink profile-heads: probe {}/{} {}: prompt {} tokens, needle tokens [{}, {}), answer {} "
               "tokens, {:.2f} s\n",
               i + 1, n, probe.label, probe.prompt.size(), probe.needle[0], probe.needle[1],
               probe.answer.size(), seconds_since(probe_start));
    probe_start = std::chrono::steady_clock::now();
  };
  const auto scores = engine::score_retrieval_heads(model, comm, std::move(probes),
                                                    coordinator ? print_probe : engine::ProbeDone());

  if (coordinator) {
    try {
      engine::write_head_profile(out, engine::retrieval_head_profile(scores, loaded.identity, config));
    } catch (const std::exception& e) {
      error = fmt::format("cannot write the head profile '{}': {}", out, e.what());
    }
    print_scores(scores, config.n_head_kv, comm.world().size, seconds_since(start));
  }
  comm::check_all(comm, error.empty(), error);
  if (coordinator) fmt::print("{}\n", out);
  return 0;
}

}  // namespace kvshrink::launch
