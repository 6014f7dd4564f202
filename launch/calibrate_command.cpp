#include "launch/calibrate_command.h"

#include <cblas.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/kv_basis_file.h"
#include "engine/compression/pca.h"
#include "launch/loaded_model.h"
#include "launch/model_options.h"

namespace kvshrink::launch {
namespace {

using engine::TokenId;

// Calibration and held-out text that Debian ships (package base-files), so nothing is fetched:
// the calibration takes chunks from these in turn; the held-out text is another license.
constexpr const char* kLicenseFolder = "/usr/share/common-licenses";
constexpr std::array<const char*, 7> kDefaultCalibrationTexts = {
    "GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "Artistic", "BSD", "CC0-1.0"};
constexpr std::array<const char*, 1> kDefaultEvalTexts = {"GFDL-1.3"};
// A text's last piece shorter than this is dropped (too few tokens to be worth a prefill).
constexpr int64_t kMinChunk = 32;

// Sample kinds, in the order of every per-kind array.
enum Kind { kKeyPost = 0, kKeyPre = 1, kValue = 2, kKinds = 3 };
constexpr std::array<const char*, kKinds> kKindNames = {"K post-RoPE", "K pre-RoPE", "V"};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::string> default_texts(std::span<const char* const> names) {
  std::vector<std::string> paths;
  for (const char* name : names) {
    const auto path = std::filesystem::path(kLicenseFolder) / name;
    if (std::filesystem::is_regular_file(path)) paths.push_back(path.string());
  }
  return paths;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path)) {
    throw std::runtime_error(fmt::format("calibrate: cannot read text file '{}'", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Token chunks, flattened for broadcasting: chunk i is tokens[begin_i, begin_i + lengths[i]).
struct Chunks {
  std::vector<TokenId> tokens;
  std::vector<int64_t> lengths;

  int64_t total() const { return static_cast<int64_t>(tokens.size()); }
};

// Each text's tokens split into pieces of at most `chunk` (a last piece under kMinChunk dropped),
// then taken in turn from each text until `max_tokens` (the last piece cut to fit), so a small
// budget still sees every text.
Chunks make_chunks(const std::vector<std::string>& paths, const engine::Tokenizer& tokenizer, int64_t chunk,
                   int64_t max_tokens) {
  std::vector<std::vector<std::vector<TokenId>>> pieces;  // [text][piece]
  for (const auto& path : paths) {
    const auto ids = tokenizer.encode(read_text(path), /*parse_special=*/false);
    auto& text = pieces.emplace_back();
    for (size_t begin = 0; begin < ids.size(); begin += static_cast<size_t>(chunk)) {
      const size_t end = std::min(ids.size(), begin + static_cast<size_t>(chunk));
      if (static_cast<int64_t>(end - begin) < std::min(chunk, kMinChunk)) break;
      text.emplace_back(ids.begin() + static_cast<ptrdiff_t>(begin),
                        ids.begin() + static_cast<ptrdiff_t>(end));
    }
  }
  Chunks chunks;
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (const auto& text : pieces) {
      if (round >= text.size()) continue;
      const auto& piece = text[round];
      const auto take = std::min<int64_t>(static_cast<int64_t>(piece.size()), max_tokens - chunks.total());
      if (take < std::min(chunk, kMinChunk)) return chunks;  // the budget is spent
      chunks.tokens.insert(chunks.tokens.end(), piece.begin(), piece.begin() + take);
      chunks.lengths.push_back(take);
      any = true;
    }
    if (!any) return chunks;  // every text is used up
  }
}

// One (layer, kv head)'s cached tokens as contiguous rows [n x d]: keys as stored (post-RoPE),
// the same keys rotated back to before RoPE, and values.
struct HeadSamples {
  int64_t n = 0;
  std::vector<float> rows[kKinds];
  std::vector<int32_t> negated_positions;
};

void gather_head(const kvstore::HeadCache& head, kernels::Backend& backend, float rope_base,
                 HeadSamples& samples) {
  const int64_t d = head.head_dim();
  samples.n = head.tokens();
  for (auto& rows : samples.rows) rows.clear();
  samples.negated_positions.clear();
  for (const auto& segment : head.segments()) {
    const auto floats = static_cast<size_t>(segment.tokens() * d);
    samples.rows[kKeyPost].insert(samples.rows[kKeyPost].end(), segment.keys(), segment.keys() + floats);
    samples.rows[kValue].insert(samples.rows[kValue].end(), segment.values(), segment.values() + floats);
    for (int64_t t = 0; t < segment.tokens(); ++t)
      samples.negated_positions.push_back(-segment.positions()[t]);
  }
  // RoPE rotates pair (2i, 2i+1) by theta_i = pos * base^(-2i/d); the engine's own rope at -pos
  // rotates by -theta_i, the exact inverse, with the same convention by construction.
  samples.rows[kKeyPre] = samples.rows[kKeyPost];
  if (samples.n > 0) {
    backend.rope(samples.rows[kKeyPre].data(), samples.n, 1, d, samples.negated_positions.data(), rope_base);
  }
}

// Adds to sums[i] the relative error ||x - P_r x||^2 / ||x||^2 of every row x of samples [n x d]
// at r = ranks[i] in `basis` (d orthonormal vectors of d floats), and the rows counted to count
// (rows with x = 0 are skipped). With c = U^T x, the error is sum_{k >= r} c_k^2 / ||x||^2: the
// tail of the coefficients, free of the cancellation in ||x||^2 - ||c_r||^2.
void add_errors(std::span<const float> samples, int64_t n, int64_t d, std::span<const float> basis,
                std::span<const int64_t> ranks, double* sums, double& count,
                std::vector<float>& coefficients) {
  if (n == 0) return;
  coefficients.resize(static_cast<size_t>(n * d));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(d),
              static_cast<int>(d), 1.0f, samples.data(), static_cast<int>(d), basis.data(),
              static_cast<int>(d), 0.0f, coefficients.data(), static_cast<int>(d));
  std::vector<double> tail(static_cast<size_t>(d + 1));
  for (int64_t t = 0; t < n; ++t) {
    const float* x = samples.data() + t * d;
    const float* c = coefficients.data() + t * d;
    double norm = 0.0;
    for (int64_t i = 0; i < d; ++i) norm += static_cast<double>(x[i]) * x[i];
    if (norm == 0.0) continue;
    tail[static_cast<size_t>(d)] = 0.0;
    for (int64_t k = d - 1; k >= 0; --k) {
      tail[static_cast<size_t>(k)] = tail[static_cast<size_t>(k + 1)] + static_cast<double>(c[k]) * c[k];
    }
    for (size_t i = 0; i < ranks.size(); ++i) sums[i] += tail[static_cast<size_t>(ranks[i])] / norm;
    count += 1.0;
  }
}

}  // namespace

CLI::App* add_calibrate_command(CLI::App& app, CalibrateOptions& o) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Compute per-(layer, kv head) energy-ordered key and value bases (uncentered PCA) from calibration "
      "text, write them as <model>.kvbasis.gguf and report the reconstruction error on held-out text");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size);
  cmd->add_option(
      "--text", o.text,
      fmt::format("Calibration text files (default: the license texts {} in {}, those that exist)",
                  fmt::join(kDefaultCalibrationTexts, ", "), kLicenseFolder));
  cmd->add_option("--eval-text", o.eval_text,
                  fmt::format("Held-out text files for the reconstruction-error report (default: {}/{})",
                              kLicenseFolder, fmt::join(kDefaultEvalTexts, ", ")));
  cmd->add_option("--max-tokens", o.max_tokens,
                  "Calibration tokens at most (chunks taken from each text in turn)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--chunk", o.chunk,
                  "Tokens per prefill; each chunk is a fresh sequence at positions 0..chunk-1")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{kMinChunk}, int64_t{1} << 24));
  cmd->add_option("--calib-offsets", o.calib_offsets,
                  "First positions of the calibration chunks, used in turn (0 = every chunk at 0..chunk-1)")
      ->delimiter(',')
      ->capture_default_str()
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

int run_calibrate(const CalibrateOptions& options, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  const auto start = std::chrono::steady_clock::now();
  auto loaded = load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const auto& config = model.config();
  const int64_t context = context_size_or_default(options.context_size, config, comm);
  const std::string out =
      options.out.empty() ? engine::default_kv_basis_path(options.model).string() : options.out;
  const auto key_space = engine::parse_key_space(options.key_space);
  const int64_t d = config.head_dim;
  const int64_t n_layers = config.n_layers;
  const int64_t owned = model.shard().kv_heads.size();
  const int64_t first_head = model.shard().kv_heads.begin;

  // Rank 0 reads and tokenizes the texts; the chunks are broadcast.
  Chunks calibration;
  Chunks held_out;
  std::vector<std::string> text_paths;
  std::vector<std::string> eval_paths;
  std::string error;
  if (coordinator) {
    try {
      text_paths = options.text.empty() ? default_texts(kDefaultCalibrationTexts) : options.text;
      eval_paths = options.eval_text.empty() ? default_texts(kDefaultEvalTexts) : options.eval_text;
      if (text_paths.empty()) {
        throw std::runtime_error(fmt::format(
            "calibrate: none of the default calibration texts is in {}; give --text", kLicenseFolder));
      }
      if (options.chunk > context) {
        throw std::runtime_error(
            fmt::format("calibrate: --chunk {} exceeds the context of {} tokens", options.chunk, context));
      }
      for (const int64_t offset : options.calib_offsets) {
        if (offset + options.chunk > context) {
          throw std::runtime_error(
              fmt::format("calibrate: --calib-offsets {} + --chunk {} exceeds the context of {} tokens",
                          offset, options.chunk, context));
        }
      }
      calibration = make_chunks(text_paths, *loaded.tokenizer, options.chunk, options.max_tokens);
      if (calibration.total() < d) {
        throw std::runtime_error(fmt::format(
            "calibrate: {} calibration tokens are fewer than the head dimension {}; give more --text",
            calibration.total(), d));
      }
      if (options.eval_tokens > 0) {
        if (eval_paths.empty()) {
          throw std::runtime_error(fmt::format(
              "calibrate: the default held-out text is not in {}; give --eval-text or --eval-tokens 0",
              kLicenseFolder));
        }
        for (const auto& eval_path : eval_paths) {
          for (const auto& text_path : text_paths) {
            std::error_code ec;
            if (std::filesystem::equivalent(eval_path, text_path, ec)) {
              throw std::runtime_error(fmt::format(
                  "calibrate: held-out text '{}' is also calibration text; give another --eval-text",
                  eval_path));
            }
          }
        }
        if (options.eval_offset + options.chunk > context) {
          throw std::runtime_error(
              fmt::format("calibrate: --eval-offset {} + --chunk {} exceeds the context of {} tokens",
                          options.eval_offset, options.chunk, context));
        }
        held_out = make_chunks(eval_paths, *loaded.tokenizer, options.chunk, options.eval_tokens);
        if (held_out.total() == 0) throw std::runtime_error("calibrate: the held-out text has no tokens");
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
  for (auto* chunks : {&calibration, &held_out}) {
    comm.broadcast_vector(chunks->tokens, 0);
    comm.broadcast_vector(chunks->lengths, 0);
  }

  // Calibration: second moments of every owned (layer, kv head) and kind.
  std::vector<engine::SecondMoment> moments;
  for (int64_t i = 0; i < n_layers * owned * kKinds; ++i) moments.emplace_back(d);
  auto moment = [&](int64_t layer, int64_t h, int kind) -> engine::SecondMoment& {
    return moments[static_cast<size_t>((layer * owned + h) * kKinds + kind)];
  };
  HeadSamples samples;
  const auto prefill_start = std::chrono::steady_clock::now();
  int64_t begin = 0;
  for (size_t c = 0; c < calibration.lengths.size(); ++c) {
    const int64_t length = calibration.lengths[c];
    auto kv = model.make_kv_store();
    kv.advance(options.calib_offsets[c % options.calib_offsets.size()]);
    model.forward(std::span<const TokenId>(calibration.tokens).subspan(static_cast<size_t>(begin), length),
                  kv, engine::LogitsFor::kLastToken);
    begin += length;
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = 0; h < owned; ++h) {
        gather_head(kv.head(layer, h), *loaded.backend, config.rope_freq_base, samples);
        for (int kind = 0; kind < kKinds; ++kind) moment(layer, h, kind).add(samples.rows[kind], samples.n);
      }
    }
    if (coordinator) {
      fmt::print(stderr, "kvshrink calibrate: chunk {}/{} ({} tokens), {:.1f} s\n", c + 1,
                 calibration.lengths.size(), length, seconds_since(prefill_start));
    }
  }

  // Bases and energies of the owned heads, per kind: [layer][owned head][d x d] and [..][d].
  std::array<std::vector<float>, kKinds> bases;
  std::array<std::vector<float>, kKinds> energies;
  for (int kind = 0; kind < kKinds; ++kind) {
    bases[kind].resize(static_cast<size_t>(n_layers * owned * d * d));
    energies[kind].resize(static_cast<size_t>(n_layers * owned * d));
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = 0; h < owned; ++h) {
        const auto result = engine::symmetric_eigen(moment(layer, h, kind).matrix(), d);
        const int64_t block = layer * owned + h;
        std::copy(result.components.begin(), result.components.end(), bases[kind].begin() + block * d * d);
        std::copy(result.eigenvalues.begin(), result.eigenvalues.end(), energies[kind].begin() + block * d);
      }
    }
  }
  auto owned_basis = [&](int kind, int64_t layer, int64_t h) {
    return std::span<const float>(bases[kind])
        .subspan(static_cast<size_t>((layer * owned + h) * d * d), static_cast<size_t>(d * d));
  };

  // Held-out errors: sums[offset][kind][layer][rank] and counts[offset][kind][layer], this rank's heads.
  std::vector<int64_t> ranks;
  for (int64_t r = d; r >= 1 && ranks.size() < 5; r /= 2) ranks.push_back(r);
  std::vector<int64_t> offsets;
  if (held_out.total() > 0) {
    offsets.push_back(0);
    if (options.eval_offset > 0) offsets.push_back(options.eval_offset);
  }
  const auto n_ranks = static_cast<int64_t>(ranks.size());
  const auto n_offsets = static_cast<int64_t>(offsets.size());
  std::vector<double> sums(static_cast<size_t>(n_offsets * kKinds * n_layers * n_ranks), 0.0);
  std::vector<double> counts(static_cast<size_t>(n_offsets * kKinds * n_layers), 0.0);
  std::vector<float> coefficients;
  for (int64_t o = 0; o < n_offsets; ++o) {
    begin = 0;
    for (const int64_t length : held_out.lengths) {
      auto kv = model.make_kv_store();
      kv.advance(offsets[static_cast<size_t>(o)]);  // RoPE is relative: same sequence, later positions
      model.forward(std::span<const TokenId>(held_out.tokens).subspan(static_cast<size_t>(begin), length), kv,
                    engine::LogitsFor::kLastToken);
      begin += length;
      for (int64_t layer = 0; layer < n_layers; ++layer) {
        for (int64_t h = 0; h < owned; ++h) {
          gather_head(kv.head(layer, h), *loaded.backend, config.rope_freq_base, samples);
          for (int kind = 0; kind < kKinds; ++kind) {
            const int64_t cell = (o * kKinds + kind) * n_layers + layer;
            add_errors(samples.rows[kind], samples.n, d, owned_basis(kind, layer, h), ranks,
                       sums.data() + cell * n_ranks, counts[static_cast<size_t>(cell)], coefficients);
          }
        }
      }
    }
    if (coordinator) {
      fmt::print(stderr, "kvshrink calibrate: held-out {} tokens at offset {}, {:.1f} s\n", held_out.total(),
                 offsets[static_cast<size_t>(o)], seconds_since(prefill_start));
    }
  }

  // Every rank fills its own kv heads of the whole model's arrays (zeros elsewhere); the sums are
  // the whole model's bases and error figures.
  const int key_kind = key_space == engine::KeySpace::kPreRope ? kKeyPre : kKeyPost;
  std::array<std::vector<float>, 4> all;  // key basis, value basis, key energy, value energy
  for (int i = 0; i < 2; ++i) all[i].assign(static_cast<size_t>(n_layers * config.n_head_kv * d * d), 0.0f);
  for (int i = 2; i < 4; ++i) all[i].assign(static_cast<size_t>(n_layers * config.n_head_kv * d), 0.0f);
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    for (int64_t h = 0; h < owned; ++h) {
      const int64_t local = layer * owned + h;
      const int64_t global = layer * config.n_head_kv + first_head + h;
      const std::array<int, 2> kinds = {key_kind, kValue};
      for (int i = 0; i < 2; ++i) {
        std::copy_n(bases[kinds[i]].begin() + local * d * d, d * d, all[i].begin() + global * d * d);
        std::copy_n(energies[kinds[i]].begin() + local * d, d, all[2 + i].begin() + global * d);
      }
    }
  }
  for (auto& array : all) comm.all_reduce_sum(array);
  std::vector<float> stats(sums.begin(), sums.end());
  stats.insert(stats.end(), counts.begin(), counts.end());
  comm.all_reduce_sum(stats);

  error.clear();
  if (coordinator) {
    engine::KvBasis basis;
    basis.model = loaded.identity;
    basis.key_space = key_space;
    basis.n_layers = n_layers;
    basis.n_kv_heads = config.n_head_kv;
    basis.head_dim = d;
    basis.tokens = calibration.total();
    basis.chunk = options.chunk;
    basis.offsets.assign(options.calib_offsets.begin(), options.calib_offsets.end());
    basis.text = fmt::format("{}", fmt::join(text_paths, ", "));
    basis.key_basis = std::move(all[0]);
    basis.value_basis = std::move(all[1]);
    basis.key_energy = std::move(all[2]);
    basis.value_energy = std::move(all[3]);
    try {
      engine::write_kv_basis(out, basis);
    } catch (const std::exception& e) {
      error = fmt::format("cannot write the kv basis '{}': {}", out, e.what());
    }

    fmt::print(
        stderr,
        "kvshrink calibrate: {} calibration tokens in {} chunks of <= {} at offsets {} from {}; key basis "
        "{}\n",
        calibration.total(), calibration.lengths.size(), options.chunk, fmt::join(options.calib_offsets, ","),
        basis.text, options.key_space);
    if (n_offsets > 0) {
      const auto total_sum = [&](int64_t o, int kind, int64_t layer_begin, int64_t layer_end, int64_t r) {
        double sum = 0.0;
        double count = 0.0;
        for (int64_t layer = layer_begin; layer < layer_end; ++layer) {
          const int64_t cell = (o * kKinds + kind) * n_layers + layer;
          sum += stats[static_cast<size_t>(cell * n_ranks + r)];
          count += stats[sums.size() + static_cast<size_t>(cell)];
        }
        return count > 0 ? sum / count : 0.0;
      };
      fmt::print(
          stderr,
          "kvshrink calibrate: held-out {} tokens from {} in {} chunks; mean over tokens, layers and kv "
          "heads of ||x - P_r x||^2 / ||x||^2 (positions from offset @N):\n",
          held_out.total(), fmt::join(eval_paths, ", "), held_out.lengths.size());
      std::string header = "| r ";
      std::string rule = "|---";
      for (int64_t o = 0; o < n_offsets; ++o) {
        for (int kind = 0; kind < kKinds; ++kind) {
          header += fmt::format("| {} @{} ", kKindNames[kind], offsets[static_cast<size_t>(o)]);
          rule += "|---";
        }
      }
      fmt::print(stderr, "{}|\n{}|\n", header, rule);
      for (int64_t r = 0; r < n_ranks; ++r) {
        std::string row = fmt::format("| {} ", ranks[static_cast<size_t>(r)]);
        for (int64_t o = 0; o < n_offsets; ++o) {
          for (int kind = 0; kind < kKinds; ++kind)
            row += fmt::format("| {:.4f} ", total_sum(o, kind, 0, n_layers, r));
        }
        fmt::print(stderr, "{}|\n", row);
      }
      if (options.per_layer) {
        fmt::print(stderr, "kvshrink calibrate: per layer, offset 0:\n");
        std::string layer_header = "| layer ";
        std::string layer_rule = "|---";
        for (int64_t r = 1; r < n_ranks; ++r) {
          for (int kind = 0; kind < kKinds; ++kind) {
            layer_header += fmt::format("| {} r{} ", kKindNames[kind], ranks[static_cast<size_t>(r)]);
            layer_rule += "|---";
          }
        }
        fmt::print(stderr, "{}|\n{}|\n", layer_header, layer_rule);
        for (int64_t layer = 0; layer < n_layers; ++layer) {
          std::string row = fmt::format("| {} ", layer);
          for (int64_t r = 1; r < n_ranks; ++r) {
            for (int kind = 0; kind < kKinds; ++kind) {
              row += fmt::format("| {:.4f} ", total_sum(0, kind, layer, layer + 1, r));
            }
          }
          fmt::print(stderr, "{}|\n", row);
        }
      }
    }
    fmt::print(stderr, "kvshrink calibrate: {} ranks, {:.1f} s\n", comm.world().size, seconds_since(start));
  }
  comm::check_all(comm, error.empty(), error);
  if (coordinator) fmt::print("{}\n", out);
  return 0;
}

}  // namespace kvshrink::launch
