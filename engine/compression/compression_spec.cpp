#include "engine/compression/compression_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "comm/collective_error.h"
#include "engine/compression/head_profile_file.h"
#include "kvstore/press_registry.h"

namespace kvshrink::engine {

int64_t CompressionSpec::budget_tokens_for(int64_t n_positions) const {
  if (budget_tokens > 0) return budget_tokens;
  return std::max<int64_t>(1, std::llround(budget_fraction * static_cast<double>(n_positions)));
}

std::string CompressionSpec::label() const {
  if (!enabled()) return "full KV";
  const std::string name = allocator.empty() ? method : method + "/" + allocator;
  if (budget_tokens > 0) return fmt::format("{} {} tokens", name, budget_tokens);
  return fmt::format("{} {:g}%", name, 100 * budget_fraction);
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
    const int64_t floor = spec.method == "streamingllm" ? p.sinks : (spec.method == "knorm" ? 1 : p.window);
    if (spec.budget_tokens < floor) {
      throw std::invalid_argument(fmt::format(
          "--budget-tokens {} is below the {} {} always keeps ({}); raise the budget or lower "
          "--window/--sinks",
          spec.budget_tokens, spec.method == "streamingllm" ? "attention sinks" : "observation window",
          spec.method, floor));
    }
  }
  if (p.window < 1) throw std::invalid_argument("--window must be at least 1");
  if (p.pool_kernel < 1 || p.pool_kernel % 2 == 0)
    throw std::invalid_argument("--pool-kernel must be odd and >= 1");
  if (p.sinks < 0) throw std::invalid_argument("--sinks must be >= 0");
  if (!(p.alpha >= 0.0 && p.alpha <= 1.0)) throw std::invalid_argument("--alpha must be in [0, 1]");
  if (!(p.pyramid_beta >= 1.0)) throw std::invalid_argument("--pyramid-beta must be >= 1");
  if (!(p.head_beta > 1.0)) throw std::invalid_argument("--head-beta must be > 1");
  if (!(p.r_max >= 1.0)) throw std::invalid_argument("--r-max must be >= 1");
  if (spec.compress_every < 0) throw std::invalid_argument("--compress-every must be >= 0");
}

std::unique_ptr<KvCompressor> make_compressor(const CompressionSpec& spec, const LlamaModel& model,
                                              comm::Communicator& comm,
                                              const std::filesystem::path& model_path,
                                              const std::string& model_identity) {
  validate(spec);
  std::vector<double> importance;
  const std::string allocator =
      spec.allocator.empty() ? kvstore::default_allocator(spec.method) : spec.allocator;
  if (allocator == "headkv") {
    const std::filesystem::path path = spec.params.head_profile.empty()
                                           ? default_head_profile_path(model_path)
                                           : std::filesystem::path(spec.params.head_profile);
    std::string error;
    try {
      if (!std::filesystem::exists(path)) {
        throw std::runtime_error(
            fmt::format("headkv needs a head profile: '{}' does not exist (make it with `kvshrink "
                        "profile-heads --model {}`, or "
                        "give --head-profile)",
                        path.string(), model_path.string()));
      }
      const auto profile = read_head_profile(path);
      check_profile_fits(profile, model_identity, model.config(), path);
      importance = profile.importance;
      // The allocator cannot use an all-zero profile; say so here, where every rank agrees on it.
      if (!(std::accumulate(importance.begin(), importance.end(), 0.0) > 0.0)) {
        throw std::runtime_error(fmt::format(
            "head profile '{}' is all zero: make it again with `kvshrink profile-heads`", path.string()));
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    comm::check_all(comm, error.empty(), error);
  }
  auto method = kvstore::make_method(spec.method, spec.params, spec.allocator, std::move(importance));
  return std::make_unique<KvCompressor>(model, comm, std::move(method.press), std::move(method.allocator));
}

}  // namespace kvshrink::engine
