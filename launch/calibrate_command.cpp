#include "launch/calibrate_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/kv_basis_file.h"
#include "engine/compression/low_rank_projection.h"
#include "engine/compression/pca.h"
#include "engine/model/loaded_model.h"
#include "engine/model/tensor_parallel_split.h"
#include "launch/model_options.h"
#include "launch/output_path.h"
#include "launch/process_memory.h"

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

// Importance predictor (engine::predict_importance): the tokens of a chunk it is fitted and measured
// on leave out the first kSinkTokens (attention sinks, always kept anyway) and the last
// kRecentTokens (seen by too few queries for a stable mean).
constexpr int64_t kSinkTokens = 4;
constexpr int64_t kRecentTokens = 32;
constexpr double kImportanceFloor = 1e-6;  // y = log(mass / seen + floor)
constexpr double kRidge = 1e-3;            // lambda = kRidge * trace(X^T X / n) / features

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
// the same keys rotated back to before RoPE, and values; with each token's position and, when the
// store tracks it, its accumulated attention mass [n] (else empty).
struct HeadSamples {
  int64_t n = 0;
  std::vector<float> rows[kKinds];
  std::vector<int32_t> positions;
  std::vector<float> mass;
};

void gather_head(const kvstore::HeadCache& head, kernels::Backend& backend, float rope_base,
                 HeadSamples& samples) {
  const int64_t d = head.head_dim();
  samples.n = head.tokens();
  for (auto& rows : samples.rows) rows.clear();
  samples.positions.clear();
  samples.mass.clear();
  for (const auto& segment : head.segments()) {
    const auto keys = segment.keys();
    const auto values = segment.values();
    const auto positions = segment.positions();
    samples.rows[kKeyPost].insert(samples.rows[kKeyPost].end(), keys.begin(), keys.end());
    samples.rows[kValue].insert(samples.rows[kValue].end(), values.begin(), values.end());
    samples.positions.insert(samples.positions.end(), positions.begin(), positions.end());
    if (segment.tracks_mass()) {
      for (int64_t i = 0; i < segment.tokens(); ++i) samples.mass.push_back(segment.mass(i));
    }
  }
  samples.rows[kKeyPre] = samples.rows[kKeyPost];
  engine::unrotate_keys(samples.rows[kKeyPre].data(), samples.positions.data(), samples.n, d, rope_base,
                        backend);
}

// Adds to sums[i] the relative error ||x - P_r x||^2 / ||x||^2 of every row x of samples [n x d]
// at r = ranks[i] in `basis` (engine::relative_errors), and the rows counted to count (rows with
// x = 0 are skipped).
void add_errors(std::span<const float> samples, int64_t n, int64_t d, std::span<const float> basis,
                std::span<const int32_t> ranks, double* sums, double& count) {
  if (n == 0) return;
  const auto errors = engine::relative_errors(samples.data(), n, d, basis, ranks);
  for (int64_t t = 0; t < n; ++t) {
    const float* x = samples.data() + t * d;
    if (std::all_of(x, x + d, [](float v) { return v == 0.0f; })) continue;
    for (size_t i = 0; i < ranks.size(); ++i) sums[i] += errors[static_cast<size_t>(t) * ranks.size() + i];
    count += 1.0;
  }
}

// Tokens of chunks of these lengths that the importance predictor is fitted or measured on.
int64_t importance_tokens(std::span<const int64_t> lengths) {
  int64_t tokens = 0;
  for (const int64_t length : lengths) tokens += std::max<int64_t>(0, length - kSinkTokens - kRecentTokens);
  return tokens;
}

// Appends to rows one row [pre-RoPE key (d), value (d), 1, y] (2d + 2 floats) per fitted token of
// samples, a chunk prefilled at positions [begin, end) with attention mass tracked; y =
// log(mass / seen + kImportanceFloor), seen = end - position = the queries that attended to it.
void add_importance_rows(const HeadSamples& samples, int64_t d, int64_t begin, int64_t end,
                         std::vector<float>& rows) {
  for (int64_t t = 0; t < samples.n; ++t) {
    const int64_t position = samples.positions[static_cast<size_t>(t)];
    if (position - begin < kSinkTokens || end - position <= kRecentTokens) continue;
    const float* key = samples.rows[kKeyPre].data() + t * d;
    const float* value = samples.rows[kValue].data() + t * d;
    rows.insert(rows.end(), key, key + d);
    rows.insert(rows.end(), value, value + d);
    const double seen = static_cast<double>(end - position);
    rows.push_back(1.0f);
    rows.push_back(static_cast<float>(
        std::log(static_cast<double>(samples.mass[static_cast<size_t>(t)]) / seen + kImportanceFloor)));
  }
}

// Ridge fit of y on the features from the second moment of rows [features, y] (add_importance_rows):
// w [features] with (X^T X / n + lambda I) w = X^T y / n, lambda = kRidge * trace / features.
std::vector<float> fit_importance(const engine::SecondMoment& moment) {
  const int64_t p = moment.dim() - 1;
  const auto m = moment.matrix();  // [(p + 1) x (p + 1)]
  std::vector<double> gram(static_cast<size_t>(p * p));
  std::vector<double> rhs(static_cast<size_t>(p));
  double trace = 0.0;
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j < p; ++j)
      gram[static_cast<size_t>(i * p + j)] = m[static_cast<size_t>(i * (p + 1) + j)];
    rhs[static_cast<size_t>(i)] = m[static_cast<size_t>(i * (p + 1) + p)];
    trace += gram[static_cast<size_t>(i * p + i)];
  }
  const auto w = engine::ridge_solve(gram, rhs, p, kRidge * trace / static_cast<double>(p));
  return std::vector<float>(w.begin(), w.end());
}

// Pearson correlation of a and b; NaN when fewer than 2 pairs or either does not vary.
double pearson(std::span<const double> a, std::span<const double> b) {
  const auto n = static_cast<double>(a.size());
  if (a.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  const double mean_a = std::accumulate(a.begin(), a.end(), 0.0) / n;
  const double mean_b = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double ab = 0.0;
  double aa = 0.0;
  double bb = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += (a[i] - mean_a) * (b[i] - mean_b);
    aa += (a[i] - mean_a) * (a[i] - mean_a);
    bb += (b[i] - mean_b) * (b[i] - mean_b);
  }
  if (aa == 0.0 || bb == 0.0) return std::numeric_limits<double>::quiet_NaN();
  return ab / std::sqrt(aa * bb);
}

// Ranks 0..n-1 of values (ties share their mean rank), for Spearman's correlation.
std::vector<double> ranks_of(std::span<const double> values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && values[order[j + 1]] == values[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = 0.5 * static_cast<double>(i + j);
    i = j + 1;
  }
  return ranks;
}

// One layer's keys (in the key space) and values of every kv head side by side, [n x D] with
// D = n_kv_heads * d, head 0's d components first. Each rank packs its own heads' rows
// [keys n x owned * d][values n x owned * d] (pack_head), and the all-gather concatenates the ranks'
// pieces in rank order, which is head order because shards are contiguous and ascending.
class LayerGather {
 public:
  LayerGather(const engine::LlamaConfig& config, int tp_size, int64_t owned)
      : d_(config.head_dim), owned_(owned), joint_(config.n_head_kv * config.head_dim) {
    for (int r = 0; r < tp_size; ++r) {
      const auto heads = engine::split_range(config.n_head_kv, tp_size, r);
      first_.push_back(heads.begin);
      heads_.push_back(heads.size());
    }
  }

  int64_t joint_dim() const { return joint_; }
  std::span<const float> keys() const { return keys_; }
  std::span<const float> values() const { return values_; }

  // Owned head h's rows (samples.n tokens, the same for every head) into this rank's piece.
  void pack_head(int64_t h, const HeadSamples& samples, int key_kind) {
    n_ = samples.n;
    const int64_t width = owned_ * d_;
    send_.resize(static_cast<size_t>(2 * n_ * width));
    for (int64_t t = 0; t < n_; ++t) {
      std::copy_n(samples.rows[key_kind].begin() + t * d_, d_, send_.begin() + t * width + h * d_);
      std::copy_n(samples.rows[kValue].begin() + t * d_, d_, send_.begin() + (n_ + t) * width + h * d_);
    }
  }

  // Collective: every rank calls it after packing all its heads; keys() and values() are then set.
  void gather(comm::Communicator& comm) {
    counts_.clear();
    for (const int64_t heads : heads_) counts_.push_back(2 * n_ * heads * d_);
    recv_.resize(static_cast<size_t>(2 * n_ * joint_));
    comm.all_gather(send_, recv_, counts_);
    keys_.resize(static_cast<size_t>(n_ * joint_));
    values_.resize(static_cast<size_t>(n_ * joint_));
    int64_t piece = 0;  // start of rank r's piece in recv_
    for (size_t r = 0; r < heads_.size(); ++r) {
      const int64_t width = heads_[r] * d_;
      for (int64_t t = 0; t < n_; ++t) {
        std::copy_n(recv_.begin() + piece + t * width, width, keys_.begin() + t * joint_ + first_[r] * d_);
        std::copy_n(recv_.begin() + piece + (n_ + t) * width, width,
                    values_.begin() + t * joint_ + first_[r] * d_);
      }
      piece += 2 * n_ * width;
    }
  }

 private:
  int64_t d_;
  int64_t owned_;
  int64_t joint_;
  int64_t n_ = 0;
  std::vector<int64_t> first_;  // [rank] first kv head
  std::vector<int64_t> heads_;  // [rank] kv heads owned
  std::vector<int64_t> counts_;
  std::vector<float> send_;
  std::vector<float> recv_;
  std::vector<float> keys_;    // [n x D]
  std::vector<float> values_;  // [n x D]
};

// Prints the joint bases' held-out errors beside the per-head bases' at the same total dimensions:
// row i is rank R = joint_ranks[i] = D / 2^i jointly and r = R / n_kv_heads per head (table index i,
// while i < head_ranks). joint: the summed stats [offset][key, value][layer][joint rank] then
// [offset][key, value][layer] counts; per_head(o, kind, i): the per-head table's entry.
void print_joint_errors(std::span<const int64_t> offsets, int key_kind, int64_t n_kv_heads, int64_t n_layers,
                        std::span<const int32_t> joint_ranks, int64_t head_ranks,
                        std::span<const float> joint,
                        const std::function<double(int64_t, int, int64_t)>& per_head) {
  const auto n_offsets = static_cast<int64_t>(offsets.size());
  const auto n_joint_ranks = static_cast<int64_t>(joint_ranks.size());
  const size_t counts_begin = static_cast<size_t>(n_offsets * 2 * n_layers * n_joint_ranks);
  const auto mean = [&](int64_t o, int i, int64_t r) {
    double sum = 0.0;
    double count = 0.0;
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      const int64_t cell = (o * 2 + i) * n_layers + layer;
      sum += joint[static_cast<size_t>(cell * n_joint_ranks + r)];
      count += joint[counts_begin + static_cast<size_t>(cell)];
    }
    return count > 0 ? sum / count : 0.0;
  };
  fmt::print(
      stderr,
      "kvshrink calibrate: joint bases (per layer, the {} kv heads' {} dims together): held-out mean over "
      "tokens and layers of ||x - P_R x||^2 / ||x||^2, beside the per-head bases at r = R / {}:\n",
      n_kv_heads, joint_ranks.front(), n_kv_heads);
  std::string header = "| R (r) ";
  std::string rule = "|---";
  for (const int64_t offset : offsets) {
    for (const int kind : {key_kind, static_cast<int>(kValue)}) {
      header += fmt::format("| joint {0} @{1} | per-head {0} @{1} ", kKindNames[kind], offset);
      rule += "|---|---";
    }
  }
  fmt::print(stderr, "{}|\n{}|\n", header, rule);
  for (int64_t r = 0; r < n_joint_ranks; ++r) {
    const int64_t joint_rank = joint_ranks[static_cast<size_t>(r)];
    std::string row = fmt::format("| {} ({}) ", joint_rank, joint_rank / n_kv_heads);
    for (int64_t o = 0; o < n_offsets; ++o) {
      for (int i = 0; i < 2; ++i) {
        row += fmt::format("| {:.4f} ", mean(o, i, r));
        row += r < head_ranks ? fmt::format("| {:.4f} ", per_head(o, i == 0 ? key_kind : kValue, r)) : "| - ";
      }
    }
    fmt::print(stderr, "{}|\n", row);
  }
}

// Prints the mean over kv heads of the held-out correlations between predicted and actual
// log-importance. correlations: the summed stats [offset][pearson, spearman, defined][layer x kv head].
void print_importance(std::span<const int64_t> offsets, int64_t all_heads, int64_t tokens,
                      std::span<const float> correlations) {
  std::string line = fmt::format(
      "kvshrink calibrate: importance predictor on held-out log-importance ({} tokens per kv head, "
      "the first {} and last {} of each chunk left out):",
      tokens, kSinkTokens, kRecentTokens);
  for (size_t o = 0; o < offsets.size(); ++o) {
    const auto block = correlations.subspan(o * 3 * static_cast<size_t>(all_heads));
    double r = 0.0;
    double rho = 0.0;
    double defined = 0.0;
    for (int64_t head = 0; head < all_heads; ++head) {
      const auto at = static_cast<size_t>(head);
      r += block[at];
      rho += block[at + static_cast<size_t>(all_heads)];
      defined += block[at + static_cast<size_t>(2 * all_heads)];
    }
    if (defined == 0) {
      line += fmt::format(" no correlation defined @{};", offsets[o]);
      continue;
    }
    line += fmt::format(" Pearson r {:.3f}, Spearman rho {:.3f} @{} (mean over {} kv heads);", r / defined,
                        rho / defined, offsets[o], defined);
  }
  line.back() = '\n';
  fmt::print(stderr, "{}", line);
}

}  // namespace

CLI::App* add_calibrate_command(CLI::App& app, CalibrateOptions& o) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Compute per-(layer, kv head) energy-ordered key and value bases (uncentered PCA), per-layer joint "
      "bases over all kv heads and a query-agnostic token-importance predictor from calibration text, "
      "write them as <model>.kvbasis.gguf and report reconstruction error and predictor correlation on "
      "held-out text");
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

int run_calibrate(const CalibrateOptions& given, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  const auto start = std::chrono::steady_clock::now();
  const std::string out = given.out.empty() ? engine::default_kv_basis_path(given.model).string() : given.out;
  check_output_file(out, comm);
  auto loaded = engine::load_model(given.model, comm, given.batch_size);
  auto& model = *loaded.model;
  const auto& config = model.config();
  const int64_t context = engine::context_size_or_default(given.context_size, config, comm);
  CalibrateOptions options = given;
  if (options.calib_offsets.empty()) {
    // A post-RoPE basis must see the positions it will serve (docs/calibration.md): chunks spread
    // over the context. Pre-RoPE keys and values do not depend on the position.
    options.calib_offsets = {0};
    if (options.key_space == "post-rope") {
      for (int64_t offset = options.chunk; offset + options.chunk <= context; offset += options.chunk)
        options.calib_offsets.push_back(offset);
    }
  }
  const auto key_space = engine::parse_key_space(options.key_space);
  const int64_t d = config.head_dim;
  const int64_t n_layers = config.n_layers;
  const int64_t owned = model.shard().kv_heads.size();
  const int64_t first_head = model.shard().kv_heads.begin;
  const int key_kind = key_space == engine::KeySpace::kPreRope ? kKeyPre : kKeyPost;
  const int64_t features = 2 * d + 1;  // importance predictor: [pre-RoPE key, value, 1]
  // Joint bases: layer l's second moments and eigendecompositions are this rank's when
  // l % ranks == rank (every rank receives every layer's rows; the work is split by layer).
  const int tp_size = comm.world().size;
  const auto joint_here = [&](int64_t layer) { return layer % tp_size == comm.world().rank; };

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
      if (importance_tokens(calibration.lengths) == 0) {
        throw std::runtime_error(fmt::format(
            "calibrate: no calibration chunk is longer than {} tokens (the importance fit leaves out the "
            "first {} and the last {} of each); give a larger --chunk or more --text",
            kSinkTokens + kRecentTokens, kSinkTokens, kRecentTokens));
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

  // Calibration: second moments of every owned (layer, kv head) and kind; of the importance rows
  // [features, y] of every owned head; of each of this rank's layers' joint keys and values.
  std::vector<engine::SecondMoment> moments;
  for (int64_t i = 0; i < n_layers * owned * kKinds; ++i) moments.emplace_back(d);
  auto moment = [&](int64_t layer, int64_t h, int kind) -> engine::SecondMoment& {
    return moments[static_cast<size_t>((layer * owned + h) * kKinds + kind)];
  };
  std::vector<engine::SecondMoment> importance_moments;
  for (int64_t i = 0; i < n_layers * owned; ++i) importance_moments.emplace_back(features + 1);
  LayerGather layer_rows(config, tp_size, owned);
  const int64_t joint_dim = layer_rows.joint_dim();
  // [layer][key, value]: D x D for this rank's layers, dimension-1 placeholders for the others.
  std::vector<engine::SecondMoment> joint_moments;
  for (int64_t i = 0; i < 2 * n_layers; ++i) joint_moments.emplace_back(joint_here(i / 2) ? joint_dim : 1);
  const kvstore::KvStoreOptions track_mass{.track_attention_mass = true};
  HeadSamples samples;
  std::vector<float> importance_rows;
  const auto prefill_start = std::chrono::steady_clock::now();
  int64_t begin = 0;
  for (size_t c = 0; c < calibration.lengths.size(); ++c) {
    const int64_t length = calibration.lengths[c];
    const int64_t offset = options.calib_offsets[c % options.calib_offsets.size()];
    auto kv = model.make_kv_store(track_mass);
    kv.advance(offset);
    model.forward(std::span<const TokenId>(calibration.tokens).subspan(static_cast<size_t>(begin), length),
                  kv, engine::LogitsFor::kLastToken);
    begin += length;
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = 0; h < owned; ++h) {
        gather_head(kv.head(layer, h), *loaded.backend, config.rope_freq_base, samples);
        for (int kind = 0; kind < kKinds; ++kind) moment(layer, h, kind).add(samples.rows[kind], samples.n);
        importance_rows.clear();
        add_importance_rows(samples, d, offset, offset + length, importance_rows);
        importance_moments[static_cast<size_t>(layer * owned + h)].add(
            importance_rows, static_cast<int64_t>(importance_rows.size()) / (features + 1));
        layer_rows.pack_head(h, samples, key_kind);
      }
      layer_rows.gather(comm);
      if (joint_here(layer)) {
        joint_moments[static_cast<size_t>(2 * layer)].add(layer_rows.keys(), samples.n);
        joint_moments[static_cast<size_t>(2 * layer + 1)].add(layer_rows.values(), samples.n);
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

  // Importance weights of the owned heads: [layer][owned head][features].
  std::vector<float> importance(static_cast<size_t>(n_layers * owned * features));
  for (int64_t i = 0; i < n_layers * owned; ++i) {
    const auto w = fit_importance(importance_moments[static_cast<size_t>(i)]);
    std::copy(w.begin(), w.end(), importance.begin() + i * features);
  }
  auto owned_importance = [&](int64_t layer, int64_t h) {
    return std::span<const float>(importance)
        .subspan(static_cast<size_t>((layer * owned + h) * features), static_cast<size_t>(features));
  };

  // Joint bases of every layer: each rank fills its layers (zeros elsewhere) and the sums are whole.
  // joint[0], joint[1]: key, value bases [layer][D x D]; joint[2], joint[3]: energies [layer][D].
  std::array<std::vector<float>, 4> joint;
  for (int i = 0; i < 2; ++i) joint[i].assign(static_cast<size_t>(n_layers * joint_dim * joint_dim), 0.0f);
  for (int i = 2; i < 4; ++i) joint[i].assign(static_cast<size_t>(n_layers * joint_dim), 0.0f);
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    if (!joint_here(layer)) continue;
    for (int i = 0; i < 2; ++i) {
      const auto result =
          engine::symmetric_eigen(joint_moments[static_cast<size_t>(2 * layer + i)].matrix(), joint_dim);
      std::copy(result.components.begin(), result.components.end(),
                joint[i].begin() + layer * joint_dim * joint_dim);
      std::copy(result.eigenvalues.begin(), result.eigenvalues.end(),
                joint[2 + i].begin() + layer * joint_dim);
    }
  }
  for (auto& array : joint) comm.all_reduce_sum(array);
  auto joint_basis = [&](int i, int64_t layer) {
    return std::span<const float>(joint[i]).subspan(static_cast<size_t>(layer * joint_dim * joint_dim),
                                                    static_cast<size_t>(joint_dim * joint_dim));
  };

  // Held-out errors: sums[offset][kind][layer][rank] and counts[offset][kind][layer], this rank's heads.
  std::vector<int32_t> ranks;
  for (int64_t r = d; r >= 1 && ranks.size() < 5; r /= 2) ranks.push_back(static_cast<int32_t>(r));
  std::vector<int64_t> offsets;
  if (held_out.total() > 0) {
    offsets.push_back(0);
    if (options.eval_offset > 0) offsets.push_back(options.eval_offset);
  }
  const auto n_ranks = static_cast<int64_t>(ranks.size());
  const auto n_offsets = static_cast<int64_t>(offsets.size());
  std::vector<double> sums(static_cast<size_t>(n_offsets * kKinds * n_layers * n_ranks), 0.0);
  std::vector<double> counts(static_cast<size_t>(n_offsets * kKinds * n_layers), 0.0);
  // Joint bases, this rank's layers: joint_sums[offset][key, value][layer][rank] at joint_ranks
  // D, D/2, D/4, D/8 (the per-head d, d/2, d/4, d/8 in total dimensions), joint_counts[..][layer].
  std::vector<int32_t> joint_ranks;
  for (int64_t r = joint_dim; r >= 1 && joint_ranks.size() < 4; r /= 2)
    joint_ranks.push_back(static_cast<int32_t>(r));
  const auto n_joint_ranks = static_cast<int64_t>(joint_ranks.size());
  std::vector<double> joint_sums(static_cast<size_t>(n_offsets * 2 * n_layers * n_joint_ranks), 0.0);
  std::vector<double> joint_counts(static_cast<size_t>(n_offsets * 2 * n_layers), 0.0);
  // Importance predictor: predicted and actual log-importance of the fitted tokens of every owned
  // head, [offset][layer][owned head][token].
  std::vector<std::vector<double>> predicted(static_cast<size_t>(n_offsets * n_layers * owned));
  std::vector<std::vector<double>> actual(predicted.size());
  for (int64_t o = 0; o < n_offsets; ++o) {
    const int64_t offset = offsets[static_cast<size_t>(o)];
    begin = 0;
    for (const int64_t length : held_out.lengths) {
      auto kv = model.make_kv_store(track_mass);
      kv.advance(offset);  // RoPE is relative: same sequence, later positions
      model.forward(std::span<const TokenId>(held_out.tokens).subspan(static_cast<size_t>(begin), length), kv,
                    engine::LogitsFor::kLastToken);
      begin += length;
      for (int64_t layer = 0; layer < n_layers; ++layer) {
        for (int64_t h = 0; h < owned; ++h) {
          gather_head(kv.head(layer, h), *loaded.backend, config.rope_freq_base, samples);
          for (int kind = 0; kind < kKinds; ++kind) {
            const int64_t cell = (o * kKinds + kind) * n_layers + layer;
            add_errors(samples.rows[kind], samples.n, d, owned_basis(kind, layer, h), ranks,
                       sums.data() + cell * n_ranks, counts[static_cast<size_t>(cell)]);
          }
          importance_rows.clear();
          add_importance_rows(samples, d, offset, offset + length, importance_rows);
          const auto cell = static_cast<size_t>((o * n_layers + layer) * owned + h);
          for (size_t row = 0; row < importance_rows.size(); row += static_cast<size_t>(features + 1)) {
            const float* x = importance_rows.data() + row;
            predicted[cell].push_back(engine::predict_importance(owned_importance(layer, h), x, x + d, d));
            actual[cell].push_back(x[features]);
          }
          layer_rows.pack_head(h, samples, key_kind);
        }
        layer_rows.gather(comm);
        if (joint_here(layer)) {
          for (int i = 0; i < 2; ++i) {
            const int64_t cell = (o * 2 + i) * n_layers + layer;
            add_errors(i == 0 ? layer_rows.keys() : layer_rows.values(), samples.n, joint_dim,
                       joint_basis(i, layer), joint_ranks, joint_sums.data() + cell * n_joint_ranks,
                       joint_counts[static_cast<size_t>(cell)]);
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
  // the whole model's bases, importance weights and error figures.
  // all: key basis, value basis, key energy, value energy, importance weights
  std::array<std::vector<float>, 5> all;
  for (int i = 0; i < 2; ++i) all[i].assign(static_cast<size_t>(n_layers * config.n_head_kv * d * d), 0.0f);
  for (int i = 2; i < 4; ++i) all[i].assign(static_cast<size_t>(n_layers * config.n_head_kv * d), 0.0f);
  all[4].assign(static_cast<size_t>(n_layers * config.n_head_kv * features), 0.0f);
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    for (int64_t h = 0; h < owned; ++h) {
      const int64_t local = layer * owned + h;
      const int64_t global = layer * config.n_head_kv + first_head + h;
      const std::array<int, 2> kinds = {key_kind, kValue};
      for (int i = 0; i < 2; ++i) {
        std::copy_n(bases[kinds[i]].begin() + local * d * d, d * d, all[i].begin() + global * d * d);
        std::copy_n(energies[kinds[i]].begin() + local * d, d, all[2 + i].begin() + global * d);
      }
      std::copy_n(importance.begin() + local * features, features, all[4].begin() + global * features);
    }
  }
  for (auto& array : all) comm.all_reduce_sum(array);
  // stats: sums, counts, joint_sums, joint_counts, then per offset and owned head (zeros elsewhere)
  // the Pearson and Spearman correlations of predicted and actual log-importance and whether they
  // are defined: [offset][pearson, spearman, defined][layer][kv head].
  std::vector<float> stats(sums.begin(), sums.end());
  stats.insert(stats.end(), counts.begin(), counts.end());
  stats.insert(stats.end(), joint_sums.begin(), joint_sums.end());
  stats.insert(stats.end(), joint_counts.begin(), joint_counts.end());
  const size_t correlation_begin = stats.size();
  const int64_t all_heads = n_layers * config.n_head_kv;
  stats.resize(correlation_begin + static_cast<size_t>(n_offsets * 3 * all_heads), 0.0f);
  for (int64_t o = 0; o < n_offsets; ++o) {
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      for (int64_t h = 0; h < owned; ++h) {
        const auto cell = static_cast<size_t>((o * n_layers + layer) * owned + h);
        const double r = pearson(predicted[cell], actual[cell]);
        const double rho = pearson(ranks_of(predicted[cell]), ranks_of(actual[cell]));
        if (std::isnan(r) || std::isnan(rho)) continue;
        const size_t at = correlation_begin +
                          static_cast<size_t>(o * 3 * all_heads + layer * config.n_head_kv + first_head + h);
        stats[at] = static_cast<float>(r);
        stats[at + static_cast<size_t>(all_heads)] = static_cast<float>(rho);
        stats[at + static_cast<size_t>(2 * all_heads)] = 1.0f;
      }
    }
  }
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
    basis.importance = std::move(all[4]);
    basis.joint_dim = joint_dim;
    basis.joint_key_basis = std::move(joint[0]);
    basis.joint_value_basis = std::move(joint[1]);
    basis.joint_key_energy = std::move(joint[2]);
    basis.joint_value_energy = std::move(joint[3]);
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
      print_joint_errors(offsets, key_kind, config.n_head_kv, n_layers, joint_ranks, n_ranks,
                         std::span<const float>(stats).subspan(sums.size() + counts.size()),
                         [&](int64_t o, int kind, int64_t r) { return total_sum(o, kind, 0, n_layers, r); });
      print_importance(offsets, all_heads, importance_tokens(held_out.lengths),
                       std::span<const float>(stats).subspan(correlation_begin));
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
