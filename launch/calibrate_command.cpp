#include "launch/calibrate_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/calibration/calibration_text.h"
#include "engine/calibration/head_samples.h"
#include "engine/calibration/importance_fit.h"
#include "engine/calibration/kv_calibration.h"
#include "engine/serving/engine.h"
#include "launch/model_options.h"
#include "launch/output_path.h"

namespace kvshrink::launch {
namespace {

using engine::kSampleKindNames;
using engine::kSampleKinds;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// What rank 0 reads: the text files and their token chunks.
struct CalibrationTexts {
  std::vector<std::string> text_paths;
  std::vector<std::string> eval_paths;
  engine::TokenChunks calibration;
  engine::TokenChunks held_out;
};

// The calibration chunks, after the checks of the options that need the model (head dimension d,
// context). Throws std::runtime_error with the message to report.
void read_calibration_text(const CalibrateOptions& options, const engine::Tokenizer& tokenizer, int64_t d,
                           int64_t context, CalibrationTexts& texts) {
  texts.text_paths =
      options.text.empty() ? engine::default_texts(engine::kDefaultCalibrationTexts) : options.text;
  texts.eval_paths =
      options.eval_text.empty() ? engine::default_texts(engine::kDefaultEvalTexts) : options.eval_text;
  if (texts.text_paths.empty()) {
    throw std::runtime_error(fmt::format(
        "calibrate: none of the default calibration texts is in {}; give --text", engine::kLicenseFolder));
  }
  if (options.chunk > context) {
    throw std::runtime_error(
        fmt::format("calibrate: --chunk {} exceeds the context of {} tokens", options.chunk, context));
  }
  for (const int64_t offset : options.calib_offsets) {
    if (offset + options.chunk > context) {
      throw std::runtime_error(
          fmt::format("calibrate: --calib-offsets {} + --chunk {} exceeds the context of {} tokens", offset,
                      options.chunk, context));
    }
  }
  texts.calibration =
      engine::read_token_chunks(texts.text_paths, tokenizer, options.chunk, options.max_tokens);
  if (texts.calibration.total() < d) {
    throw std::runtime_error(
        fmt::format("calibrate: {} calibration tokens are fewer than the head dimension {}; give more --text",
                    texts.calibration.total(), d));
  }
  if (engine::importance_tokens(texts.calibration.lengths) == 0) {
    throw std::runtime_error(fmt::format(
        "calibrate: no calibration chunk is longer than {} tokens (the importance fit leaves out the "
        "first {} and the last {} of each); give a larger --chunk or more --text",
        engine::kImportanceSinkTokens + engine::kImportanceRecentTokens, engine::kImportanceSinkTokens,
        engine::kImportanceRecentTokens));
  }
}

// The held-out chunks (none when --eval-tokens 0), after their option checks. Throws as above.
void read_held_out_text(const CalibrateOptions& options, const engine::Tokenizer& tokenizer, int64_t context,
                        CalibrationTexts& texts) {
  if (options.eval_tokens == 0) return;
  if (texts.eval_paths.empty()) {
    throw std::runtime_error(
        fmt::format("calibrate: the default held-out text is not in {}; give --eval-text or --eval-tokens 0",
                    engine::kLicenseFolder));
  }
  for (const auto& eval_path : texts.eval_paths) {
    for (const auto& text_path : texts.text_paths) {
      std::error_code ec;
      if (std::filesystem::equivalent(eval_path, text_path, ec)) {
        throw std::runtime_error(fmt::format(
            "calibrate: held-out text '{}' is also calibration text; give another --eval-text", eval_path));
      }
    }
  }
  if (options.eval_offset + options.chunk > context) {
    throw std::runtime_error(
        fmt::format("calibrate: --eval-offset {} + --chunk {} exceeds the context of {} tokens",
                    options.eval_offset, options.chunk, context));
  }
  texts.held_out = engine::read_token_chunks(texts.eval_paths, tokenizer, options.chunk, options.eval_tokens);
  if (texts.held_out.total() == 0) throw std::runtime_error("calibrate: the held-out text has no tokens");
}

// The per-head bases' held-out errors: a row per rank r, a column per offset and kind.
void print_head_errors(const engine::CalibrationReport& report, const CalibrationTexts& texts) {
  fmt::print(stderr,
             "kvshrink calibrate: held-out {} tokens from {} in {} chunks; mean over tokens, layers and kv "
             "heads of ||x - P_r x||^2 / ||x||^2 (positions from offset @N):\n",
             texts.held_out.total(), fmt::join(texts.eval_paths, ", "), texts.held_out.lengths.size());
  const auto n_offsets = static_cast<int64_t>(report.offsets.size());
  std::string header = "| r ";
  std::string rule = "|---";
  for (const int64_t offset : report.offsets) {
    for (int kind = 0; kind < kSampleKinds; ++kind) {
      header += fmt::format("| {} @{} ", kSampleKindNames[kind], offset);
      rule += "|---";
    }
  }
  fmt::print(stderr, "{}|\n{}|\n", header, rule);
  for (size_t r = 0; r < report.ranks.size(); ++r) {
    std::string row = fmt::format("| {} ", report.ranks[r]);
    for (int64_t o = 0; o < n_offsets; ++o) {
      for (int kind = 0; kind < kSampleKinds; ++kind) {
        row +=
            fmt::format("| {:.4f} ", report.mean_error(o, kind, 0, report.n_layers, static_cast<int64_t>(r)));
      }
    }
    fmt::print(stderr, "{}|\n", row);
  }
}

// The joint bases' held-out errors beside the per-head bases' at the same total dimensions: row i
// is rank R = joint_ranks[i] = D / 2^i jointly and r = R / n_kv_heads per head (while i < the
// per-head ranks).
void print_joint_errors(const engine::CalibrationReport& report, int key_kind) {
  const int64_t n_kv_heads = report.n_kv_heads;
  const auto head_ranks = static_cast<int64_t>(report.ranks.size());
  fmt::print(
      stderr,
      "kvshrink calibrate: joint bases (per layer, the {} kv heads' {} dims together): held-out mean over "
      "tokens and layers of ||x - P_R x||^2 / ||x||^2, beside the per-head bases at r = R / {}:\n",
      n_kv_heads, report.joint_ranks.front(), n_kv_heads);
  const std::array<int, 2> kinds = {key_kind, engine::kValueRows};
  std::string header = "| R (r) ";
  std::string rule = "|---";
  for (const int64_t offset : report.offsets) {
    for (const int kind : kinds) {
      header += fmt::format("| joint {0} @{1} | per-head {0} @{1} ", kSampleKindNames[kind], offset);
      rule += "|---|---";
    }
  }
  fmt::print(stderr, "{}|\n{}|\n", header, rule);
  for (int64_t r = 0; r < static_cast<int64_t>(report.joint_ranks.size()); ++r) {
    const int64_t joint_rank = report.joint_ranks[static_cast<size_t>(r)];
    std::string row = fmt::format("| {} ({}) ", joint_rank, joint_rank / n_kv_heads);
    for (int64_t o = 0; o < static_cast<int64_t>(report.offsets.size()); ++o) {
      for (int i = 0; i < 2; ++i) {
        row += fmt::format("| {:.4f} ", report.mean_joint_error(o, i, r));
        row += r < head_ranks
                   ? fmt::format("| {:.4f} ", report.mean_error(o, kinds[i], 0, report.n_layers, r))
                   : "| - ";
      }
    }
    fmt::print(stderr, "{}|\n", row);
  }
}

// The mean over kv heads of the held-out correlations between predicted and actual log-importance.
void print_importance(const engine::CalibrationReport& report) {
  std::string line = fmt::format(
      "kvshrink calibrate: importance predictor on held-out log-importance ({} tokens per kv head, "
      "the first {} and last {} of each chunk left out):",
      report.importance_tokens, engine::kImportanceSinkTokens, engine::kImportanceRecentTokens);
  for (size_t o = 0; o < report.offsets.size(); ++o) {
    const auto correlation = report.importance_correlation(static_cast<int64_t>(o));
    if (correlation.heads == 0) {
      line += fmt::format(" no correlation defined @{};", report.offsets[o]);
      continue;
    }
    line += fmt::format(" Pearson r {:.3f}, Spearman rho {:.3f} @{} (mean over {} kv heads);",
                        correlation.pearson, correlation.spearman, report.offsets[o], correlation.heads);
  }
  line.back() = '\n';
  fmt::print(stderr, "{}", line);
}

// The held-out errors of every layer at offset 0, ranks below d.
void print_layer_errors(const engine::CalibrationReport& report) {
  fmt::print(stderr, "kvshrink calibrate: per layer, offset 0:\n");
  const auto n_ranks = static_cast<int64_t>(report.ranks.size());
  std::string header = "| layer ";
  std::string rule = "|---";
  for (int64_t r = 1; r < n_ranks; ++r) {
    for (int kind = 0; kind < kSampleKinds; ++kind) {
      header += fmt::format("| {} r{} ", kSampleKindNames[kind], report.ranks[static_cast<size_t>(r)]);
      rule += "|---";
    }
  }
  fmt::print(stderr, "{}|\n{}|\n", header, rule);
  for (int64_t layer = 0; layer < report.n_layers; ++layer) {
    std::string row = fmt::format("| {} ", layer);
    for (int64_t r = 1; r < n_ranks; ++r) {
      for (int kind = 0; kind < kSampleKinds; ++kind) {
        row += fmt::format("| {:.4f} ", report.mean_error(0, kind, layer, layer + 1, r));
      }
    }
    fmt::print(stderr, "{}|\n", row);
  }
}

// Rank 0: writes the basis file; returns the error message ("" = written).
std::string write_basis(const std::string& out, const CalibrateOptions& options,
                        const engine::LoadedModel& loaded, const CalibrationTexts& texts,
                        engine::KvBasis& basis) {
  basis.model = loaded.identity;
  basis.chunk = options.chunk;
  basis.text = fmt::format("{}", fmt::join(texts.text_paths, ", "));
  try {
    engine::write_kv_basis(out, basis);
  } catch (const std::exception& e) {
    return fmt::format("cannot write the kv basis '{}': {}", out, e.what());
  }
  return "";
}

// Rank 0: what was fitted and the held-out report.
void print_calibration(const CalibrateOptions& options, const CalibrationTexts& texts,
                       const engine::KvCalibration& result) {
  fmt::print(
      stderr,
      "kvshrink calibrate: {} calibration tokens in {} chunks of <= {} at offsets {} from {}; key basis "
      "{}\n",
      texts.calibration.total(), texts.calibration.lengths.size(), options.chunk,
      fmt::join(options.calib_offsets, ","), result.basis.text, options.key_space);
  const auto& report = result.report;
  if (report.offsets.empty()) return;
  print_head_errors(report, texts);
  print_joint_errors(report, engine::key_sample_kind(result.basis.key_space));
  print_importance(report);
  if (options.per_layer) print_layer_errors(report);
}

}  // namespace

CLI::App* add_calibrate_command(CLI::App& app, CalibrateOptions& o) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Compute per-(layer, kv head) energy-ordered key and value bases (uncentered PCA), per-layer joint "
      "bases over all kv heads and a query-agnostic token-importance predictor from calibration text, "
      "write them as <model>.kvbasis.gguf and report reconstruction error and predictor correlation on "
      "held-out text");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size, o.backend);
  cmd->add_option(
      "--text", o.text,
      fmt::format("Calibration text files (default: the license texts {} in {}, those that exist)",
                  fmt::join(engine::kDefaultCalibrationTexts, ", "), engine::kLicenseFolder));
  cmd->add_option("--eval-text", o.eval_text,
                  fmt::format("Held-out text files for the reconstruction-error report (default: {}/{})",
                              engine::kLicenseFolder, fmt::join(engine::kDefaultEvalTexts, ", ")));
  cmd->add_option("--max-tokens", o.max_tokens,
                  "Calibration tokens at most (chunks taken from each text in turn)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--chunk", o.chunk,
                  "Tokens per prefill; each chunk is a fresh sequence at positions 0..chunk-1")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{engine::kMinChunk}, int64_t{1} << 24));
  cmd->add_option("--calib-offsets", o.calib_offsets,
                  "First positions of the calibration chunks, used in turn (0 = every chunk at 0..chunk-1; "
                  "default: post-rope 0, chunk, 2 chunk, ... across the context, pre-rope 0)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("--key-space", o.key_space,
                  "Keys the written key basis is for: post-rope (as the cache stores them) or pre-rope")
      ->capture_default_str()
      ->check(CLI::IsMember({"post-rope", "pre-rope"}));
  cmd->add_option("--eval-tokens", o.eval_tokens, "Held-out tokens for the error report (0 = no report)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--eval-offset", o.eval_offset,
                  "Also measure with the held-out chunks placed at positions from this offset (0 = not)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_flag("--per-layer", o.per_layer, "Also print the held-out errors of every layer");
  cmd->add_option("-o,--out", o.out, "Basis file (default: <model without .gguf>.kvbasis.gguf)");
  return cmd;
}

int run_calibrate(const CalibrateOptions& given, comm::Communicator& comm, comm::Communicator& data) {
  const bool coordinator = comm.world().is_coordinator();
  const auto start = std::chrono::steady_clock::now();
  const std::string out = given.out.empty() ? engine::default_kv_basis_path(given.model).string() : given.out;
  check_output_file(out, comm);
  engine::Engine engine({.model = given.model,
                         .context_size = given.context_size,
                         .max_num_batched_tokens = given.batch_size,
                         .backend = given.backend},
                        comm, data);
  const auto& loaded = engine.loaded();
  auto& model = engine.model();
  const auto& config = model.config();
  const int64_t context = engine.context_size();
  CalibrateOptions options = given;
  const auto key_space = engine::parse_key_space(options.key_space);
  if (options.calib_offsets.empty()) {
    options.calib_offsets = engine::default_calibration_offsets(key_space, options.chunk, context);
  }

  // Rank 0 reads and tokenizes the texts; the chunks are broadcast.
  CalibrationTexts texts;
  std::string error;
  if (coordinator) {
    try {
      read_calibration_text(options, *loaded.tokenizer, config.head_dim, context, texts);
      read_held_out_text(options, *loaded.tokenizer, context, texts);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
  engine::broadcast_token_chunks(texts.calibration, comm, 0);
  engine::broadcast_token_chunks(texts.held_out, comm, 0);

  const auto prefill_start = std::chrono::steady_clock::now();
  engine::KvCalibrationProgress progress;
  if (coordinator) {
    progress.calibration_chunk = [&](size_t c, size_t chunks, int64_t tokens) {
      fmt::print(stderr, "kvshrink calibrate: chunk {}/{} ({} tokens), {:.1f} s\n", c + 1, chunks, tokens,
                 seconds_since(prefill_start));
    };
    progress.held_out_pass = [&](int64_t offset) {
      fmt::print(stderr, "kvshrink calibrate: held-out {} tokens at offset {}, {:.1f} s\n",
                 texts.held_out.total(), offset, seconds_since(prefill_start));
    };
  }
  auto result = engine::calibrate_kv_basis(model, comm,
                                           {.key_space = key_space,
                                            .calibration = texts.calibration,
                                            .calib_offsets = options.calib_offsets,
                                            .held_out = texts.held_out,
                                            .eval_offset = options.eval_offset},
                                           progress);

  if (coordinator) {
    error = write_basis(out, options, loaded, texts, result.basis);
    print_calibration(options, texts, result);
    fmt::print(stderr, "kvshrink calibrate: {} ranks, {:.1f} s\n", comm.world().size, seconds_since(start));
  }
  comm::check_all(comm, error.empty(), error);
  if (coordinator) fmt::print("{}\n", out);
  return 0;
}

}  // namespace kvshrink::launch
