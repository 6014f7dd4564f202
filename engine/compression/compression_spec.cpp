#include "engine/compression/compression_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "comm/collective_error.h"
#include "engine/compression/context_reconstruction.h"
#include "engine/compression/head_profile_file.h"
#include "engine/compression/kv_basis_file.h"
#include "kvstore/press_registry.h"

namespace kvshrink::engine {

namespace {

// The tokens per kv head the method's press keeps whatever the budget: StreamingLLM's sinks, the
// SnapKV family's and H2O's observation window (mixeddimkv: at the top rank); 1 for the others.
int64_t always_kept_tokens(const CompressionSpec& spec) {
  if (spec.method == "streamingllm") return spec.params.sinks;
  if (spec.method == "knorm" || spec.method == "tova" || spec.method == "dynakv") return 1;
  return spec.params.window;
}

const char* always_kept_what(const CompressionSpec& spec) {
  return spec.method == "streamingllm" ? "attention sinks" : "observation window";
}

const char* always_kept_flag(const CompressionSpec& spec) {
  return spec.method == "streamingllm" ? "--sinks" : "--window";
}

}  // namespace

int64_t CompressionSpec::budget_tokens_for(int64_t n_positions) const {
  if (budget_tokens > 0) return budget_tokens;
  return std::max<int64_t>(1, std::llround(budget_fraction * static_cast<double>(n_positions)));
}

std::string CompressionSpec::label() const {
  if (!enabled()) return "full KV";
  const std::string name = allocator.empty() ? method : method + "/" + allocator;
  const std::string chunk = params.chunk_size > 1 ? fmt::format(" chunk {}", params.chunk_size) : "";
  if (budget_tokens > 0) return fmt::format("{} {} tokens{}", name, budget_tokens, chunk);
  return fmt::format("{} {:g}%{}", name, 100 * budget_fraction, chunk);
}

void validate(const CompressionSpec& spec) {
  if (!spec.enabled()) return;
  kvstore::check_names(spec.method, spec.allocator);
  const bool has_fraction = spec.budget_fraction != 0.0;
  const bool has_tokens = spec.budget_tokens != 0;
  if (has_fraction == has_tokens) {
    throw std::invalid_argument(
        fmt::format("--press {} needs one budget: --budget F or --budget-tokens B", spec.method));
  }
  if (has_fraction && !(spec.budget_fraction > 0.0 && spec.budget_fraction <= 1.0)) {
    throw std::invalid_argument(fmt::format(
        "--budget {} is out of range: a fraction of the full KV cache in (0, 1]", spec.budget_fraction));
  }
  const auto& p = spec.params;
  if (has_tokens) {
    if (spec.budget_tokens < 0) throw std::invalid_argument("--budget-tokens must be positive");
    if (spec.budget_tokens < always_kept_tokens(spec)) {
      throw std::invalid_argument(
          fmt::format("--budget-tokens {} is below the {} {} always keeps ({}); raise the budget or lower {}",
                      spec.budget_tokens, always_kept_what(spec), spec.method, always_kept_tokens(spec),
                      always_kept_flag(spec)));
    }
  }
  if (p.window < 1) throw std::invalid_argument("--window must be at least 1");
  if (p.pool_kernel < 1 || p.pool_kernel % 2 == 0)
    throw std::invalid_argument("--pool-kernel must be odd and >= 1");
  if (p.sinks < 0) throw std::invalid_argument("--sinks must be >= 0");
  if (!(p.alpha >= 0.0 && p.alpha <= 1.0)) throw std::invalid_argument("--alpha must be in [0, 1]");
  if (!(p.pyramid_beta >= 1.0 && std::isfinite(p.pyramid_beta)))
    throw std::invalid_argument("--pyramid-beta must be finite and >= 1");
  if (!(p.head_beta > 1.0 && std::isfinite(p.head_beta)))
    throw std::invalid_argument("--head-beta must be finite and > 1");
  if (!(p.r_max >= 1.0 && std::isfinite(p.r_max)))
    throw std::invalid_argument("--r-max must be finite and >= 1");
  if (spec.compress_every < 0) throw std::invalid_argument("--compress-every must be >= 0");
  if (p.chunk_size < 1) throw std::invalid_argument("--chunk-size must be at least 1");
  if (p.chunk_size > 1 && spec.method == "dynakv") {
    throw std::invalid_argument(
        "--chunk-size does not apply to dynakv: it evicts no token (use snapkv+dynakv to choose chunks)");
  }
  if (!(p.dyna_rate > 0.0 && p.dyna_rate <= 1.0))
    throw std::invalid_argument("--dyna-rate must be in (0, 1]");
  if (p.joint_basis && spec.method != "dynakv" && spec.method != "snapkv+dynakv") {
    throw std::invalid_argument(
        fmt::format("--joint-basis is for dynakv and snapkv+dynakv, not {}", spec.method));
  }
  if (spec.compress_every > 0 && kvstore::is_dimension_method(spec.method) && spec.method != "dynakv") {
    throw std::invalid_argument(
        fmt::format("--compress-every does not apply to {}: it compresses once after prefill (dynakv ranks "
                    "decode tokens)",
                    spec.method));
  }
}

void check_fits_context(const CompressionSpec& spec, int64_t context) {
  if (!spec.enabled()) return;
  const auto& p = spec.params;
  for (const auto& [flag, value] : {std::pair<const char*, int64_t>{"--window", p.window},
                                    {"--sinks", p.sinks},
                                    {"--pool-kernel", p.pool_kernel}}) {
    if (value > context) {
      throw std::invalid_argument(
          fmt::format("{} {} exceeds the model's context of {} tokens", flag, value, context));
    }
  }
}

void check_budget_reachable(const CompressionSpec& spec, int64_t n_positions) {
  if (!spec.enabled()) return;
  const int64_t budget = spec.budget_tokens_for(n_positions);
  const int64_t kept = std::min(always_kept_tokens(spec), n_positions);
  if (budget >= kept) return;
  throw std::invalid_argument(
      fmt::format("{} cannot meet the budget: {:g}% of {} positions is {} tokens per kv head, fewer than the "
                  "{} tokens of the {} it always keeps; raise the budget or lower {}",
                  spec.method, 100 * spec.budget_fraction, n_positions, budget, kept, always_kept_what(spec),
                  always_kept_flag(spec)));
}

namespace {

// Runs `load` on every rank; a failure anywhere becomes a comm::JobError on every rank.
template <typename Load>
void run_collectively(comm::Communicator& comm, Load load) {
  std::string error;
  try {
    load();
  } catch (const std::exception& e) {
    error = e.what();
  }
  comm::check_all(comm, error.empty(), error);
}

std::vector<double> load_head_importance(const CompressionSpec& spec, const LlamaModel& model,
                                         const std::filesystem::path& model_path,
                                         const std::string& model_identity) {
  const std::filesystem::path path = spec.params.head_profile.empty()
                                         ? default_head_profile_path(model_path)
                                         : std::filesystem::path(spec.params.head_profile);
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error(fmt::format(
        "{} needs a head profile: '{}' does not exist (make it with `kvshrink profile-heads --model {}`, "
        "or give --head-profile)",
        spec.method, path.string(), model_path.string()));
  }
  const auto profile = read_head_profile(path);
  check_profile_fits(profile, model_identity, model.config(), path);
  // The allocators cannot use an all-zero profile; say so here, where every rank agrees on it.
  if (!(std::accumulate(profile.importance.begin(), profile.importance.end(), 0.0) > 0.0)) {
    throw std::runtime_error(fmt::format(
        "head profile '{}' is all zero: make it again with `kvshrink profile-heads`", path.string()));
  }
  return profile.importance;
}

// Candidate ranks: given ones must each divide head_dim (d, d/2, ..., 1); default d, d/2, d/4, d/8.
std::vector<int32_t> candidate_ranks(const std::vector<int32_t>& given, int64_t head_dim) {
  std::vector<int32_t> ranks = given;
  if (ranks.empty()) {
    for (int64_t r = head_dim; r >= std::max<int64_t>(1, head_dim / 8); r /= 2)
      ranks.push_back(static_cast<int32_t>(r));
  }
  for (const int32_t r : ranks) {
    if (r < 1 || r > head_dim || head_dim % r != 0) {
      throw std::invalid_argument(
          fmt::format("--ranks {}: each candidate rank must divide the head dimension {} (e.g. {},{},{},{})",
                      r, head_dim, head_dim, head_dim / 2, head_dim / 4, head_dim / 8));
    }
  }
  std::sort(ranks.begin(), ranks.end());
  if (std::adjacent_find(ranks.begin(), ranks.end()) != ranks.end()) {
    throw std::invalid_argument("--ranks: a candidate rank is given twice");
  }
  return ranks;
}

// MixedDimKV(-H) / DynaKV: the calibrated basis of this rank's heads (read on every rank, checked
// against the model), the candidate ranks and, for -H, the head weights.
std::unique_ptr<DimensionMethod> make_dimension_method(const CompressionSpec& spec, const LlamaModel& model,
                                                       const std::filesystem::path& model_path,
                                                       const std::string& model_identity,
                                                       const std::vector<double>& head_importance) {
  const auto& config = model.config();
  const int64_t d = config.head_dim;
  DimensionConfig dims;
  dims.kind = (spec.method == "mixeddimkv" || spec.method == "mixeddimkv-h") ? DimensionKind::kMixedDim
                                                                             : DimensionKind::kDynaKv;
  dims.ranks = candidate_ranks(spec.params.ranks, d);
  dims.rate = spec.params.dyna_rate;
  dims.window = spec.params.window;
  if (spec.method == "mixeddimkv-h") {
    // Head weight: a floor plus the profile score relative to the mean (every head keeps its window).
    const double mean = std::accumulate(head_importance.begin(), head_importance.end(), 0.0) /
                        static_cast<double>(head_importance.size());
    for (const double s : head_importance) dims.head_weights.push_back(0.05 + s / mean);
  }
  const std::filesystem::path path = spec.params.kv_basis.empty()
                                         ? default_kv_basis_path(model_path)
                                         : std::filesystem::path(spec.params.kv_basis);
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error(
        fmt::format("{} needs a calibrated kv basis: '{}' does not exist (make it with `kvshrink calibrate "
                    "--model {}`, or give "
                    "--kv-basis)",
                    spec.method, path.string(), model_path.string()));
  }
  const auto basis = read_kv_basis(path);
  check_kv_basis_fits(basis, model_identity, config, path);
  std::vector<std::shared_ptr<const kvstore::HeadBasis>> bases;
  std::vector<std::vector<float>> predictors;
  const auto& heads = model.shard().kv_heads;
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    for (int64_t h = heads.begin; h < heads.end; ++h) {
      auto head = std::make_shared<kvstore::HeadBasis>();
      head->head_dim = d;
      head->latent_dim = d;
      head->pre_rope = basis.key_space == KeySpace::kPreRope;
      head->rope_base = config.rope_freq_base;
      const auto key = basis.key(layer, h);
      const auto value = basis.value(layer, h);
      head->key.assign(key.begin(), key.end());
      head->value.assign(value.begin(), value.end());
      bases.push_back(std::move(head));
      const auto weights = basis.importance_weights(layer, h);
      predictors.emplace_back(weights.begin(), weights.end());
    }
  }
  std::vector<std::shared_ptr<const JointBasis>> joint;
  if (spec.params.joint_basis) {
    if (heads.size() != config.n_head_kv) {
      throw std::runtime_error(
          fmt::format("--joint-basis needs every kv head of a layer on one rank, but a rank holds {} of the "
                      "{} kv heads (run "
                      "with mpirun -np 1, or leave --joint-basis out for the per-head bases)",
                      heads.size(), config.n_head_kv));
    }
    dims.joint = true;
    const int64_t dim = basis.joint_dim;
    for (int64_t layer = 0; layer < config.n_layers; ++layer) {
      auto layer_basis = std::make_shared<JointBasis>();
      layer_basis->dim = dim;
      const auto key = basis.joint_key(layer);
      const auto value = basis.joint_value(layer);
      layer_basis->key.assign(key.begin(), key.end());
      layer_basis->value.assign(value.begin(), value.end());
      for (int64_t h = 0; h < config.n_head_kv; ++h) {  // head h's components of every joint vector
        auto view = std::make_shared<kvstore::HeadBasis>();
        view->head_dim = d;
        view->latent_dim = dim;
        view->pre_rope = basis.key_space == KeySpace::kPreRope;
        view->rope_base = config.rope_freq_base;
        for (int64_t k = 0; k < dim; ++k) {
          view->key.insert(view->key.end(), key.begin() + k * dim + h * d,
                           key.begin() + k * dim + (h + 1) * d);
          view->value.insert(view->value.end(), value.begin() + k * dim + h * d,
                             value.begin() + k * dim + (h + 1) * d);
        }
        layer_basis->heads.push_back(std::move(view));
      }
      joint.push_back(std::move(layer_basis));
    }
  }
  return std::make_unique<DimensionMethod>(std::move(dims), std::move(bases), std::move(predictors),
                                           std::move(joint));
}

}  // namespace

std::unique_ptr<KvCompressor> make_compressor(const CompressionSpec& spec, LlamaModel& model,
                                              comm::Communicator& comm,
                                              const std::filesystem::path& model_path,
                                              const std::string& model_identity, const Tokenizer& tokenizer) {
  run_collectively(comm, [&] {
    validate(spec);
    check_fits_context(spec, model.config().n_ctx_train);
  });
  std::vector<double> importance;
  const std::string allocator =
      spec.allocator.empty() ? kvstore::default_allocator(spec.method) : spec.allocator;
  if (allocator == "headkv" || spec.method == "mixeddimkv-h") {
    run_collectively(comm,
                     [&] { importance = load_head_importance(spec, model, model_path, model_identity); });
  }
  std::unique_ptr<DimensionMethod> dimensions;
  if (kvstore::is_dimension_method(spec.method)) {
    run_collectively(comm, [&] {
      dimensions = make_dimension_method(spec, model, model_path, model_identity, importance);
    });
  }
  auto method = kvstore::make_method(spec.method, spec.params, spec.allocator, std::move(importance));
  auto repeat_instruction = method.press && method.press->needs_reconstruction()
                                ? tokenizer.encode(kRepeatInstruction, /*parse_special=*/false)
                                : std::vector<TokenId>{};
  return std::make_unique<KvCompressor>(model, comm, std::move(method.press), std::move(method.allocator),
                                        std::move(dimensions), spec.params.chunk_size,
                                        std::move(repeat_instruction));
}

}  // namespace kvshrink::engine
