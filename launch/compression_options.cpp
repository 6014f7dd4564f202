#include "launch/compression_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "comm/collective_error.h"
#include "kvstore/press_registry.h"
#include "launch/cli_checks.h"

namespace kvshrink::launch {
namespace {

// Token counts past the largest context a run may have (--ctx-size) are refused at parsing; the
// model's own context is checked in engine::make_compressor.
constexpr int64_t kMaxTokens = int64_t{1} << 24;
CLI::Range token_range() {
  return CLI::Range(int64_t{1}, kMaxTokens);
}
// The allocators' ratios (--pyramid-beta, --head-beta, --r-max).
constexpr double kMaxFactor = 1e6;

}  // namespace

void add_compression_options(CLI::App& cmd, CompressionOptions& o, bool several) {
  auto names = kvstore::method_names();
  names.insert(names.begin(), "none");
  auto* press = cmd.add_option("--press", o.presses,
                               fmt::format("KV compression method{}: {}",
                                           several ? "s (comma separated)" : "", fmt::join(names, ", ")))
                    ->check(CLI::IsMember(names));
  auto* budget = cmd.add_option("--budget", o.budgets,
                                "KV budget as a fraction of the full cache's bytes, in (0, 1]" +
                                    std::string(several ? " (comma separated)" : ""))
                     ->check(positive_up_to(1.0));
  auto* tokens = cmd.add_option("--budget-tokens", o.budget_tokens,
                                "KV budget in tokens per kv head, window included (the papers' KV size)")
                     ->check(token_range());
  if (several) {
    press->delimiter(',');
    budget->delimiter(',');
    tokens->delimiter(',');
  } else {
    press->expected(1);
    budget->expected(1);
    tokens->expected(1);
  }
  budget->excludes(tokens);
  tokens->excludes(budget);
  cmd.add_option("--allocator", o.allocator,
                 fmt::format("Budget allocator instead of the method's own: {}",
                             fmt::join(kvstore::allocator_names(), ", ")))
      ->check(CLI::IsMember(kvstore::allocator_names()));
  cmd.add_option("--window", o.window,
                 "Observation window (always kept): SnapKV family 32, DynamicKV 8, H2O recent 32")
      ->check(token_range());
  cmd.add_option("--pool-kernel", o.pool_kernel, "Pooling kernel of the window scores (default 7; 1 = none)")
      ->check(token_range());
  cmd.add_option("--pool-type", o.pool_type, "Pooling: max (default) or avg (DynamicKV default)")
      ->check(CLI::IsMember({"max", "avg"}));
  cmd.add_option("--sinks", o.sinks, "StreamingLLM attention sinks (default 4)")
      ->check(CLI::Range(int64_t{0}, kMaxTokens));
  cmd.add_option("--alpha", o.alpha, "AdaKV floor: share of the uniform budget each head keeps (default 0.2)")
      ->check(finite_in(0.0, 1.0));
  cmd.add_option("--pyramid-beta", o.pyramid_beta, "PyramidKV: the top layer keeps b / beta (default 20)")
      ->check(finite_in(1.0, kMaxFactor));
  cmd.add_option("--head-beta", o.head_beta, "HeadKV: each head keeps at least b - b / beta (default 1.01)")
      ->check(finite_in(1.0, kMaxFactor));
  cmd.add_option("--r-max", o.r_max, "DynamicKV: a layer keeps at most r_max x the mean budget (default 10)")
      ->check(finite_in(1.0, kMaxFactor));
  cmd.add_option(
      "--head-profile", o.head_profile,
      "HeadKV head-importance profile (default: <model>.heads.gguf, from `kvshrink profile-heads`)");
  cmd.add_option(
         "--ranks", o.ranks,
         "MixedDimKV/DynaKV candidate ranks, each dividing the head dimension (default d,d/2,d/4,d/8)")
      ->delimiter(',');
  cmd.add_option("--dyna-rate", o.dyna_rate,
                 "snapkv+dynakv: mean share of dimensions the kept tokens keep (default 15/32; SnapKV keeps "
                 "budget / rate tokens)")
      ->check(positive_up_to(1.0));
  cmd.add_option(
      "--kv-basis", o.kv_basis,
      "Calibrated key/value bases for mixeddimkv(-h) and dynakv (default: <model>.kvbasis.gguf, from "
      "`kvshrink calibrate`)");
  cmd.add_flag("--joint-basis", o.joint_basis,
               "dynakv, snapkv+dynakv: the joint basis across a layer's kv heads (as the DynaKV paper; one "
               "eviction for all heads of a layer; needs every kv head on one rank, i.e. mpirun -np 1)");
  auto* chunk =
      cmd.add_option("--chunk-size", o.chunk_sizes,
                     "ChunkKV-style selection for every press and allocator: tokens compete in chunks "
                     "of N consecutive tokens (mean score), kept whole (default 1 = per token)" +
                         std::string(several ? " (comma separated)" : ""))
          ->check(token_range());
  if (several) {
    chunk->delimiter(',');
  } else {
    chunk->expected(1);
  }
  cmd.add_option(
         "--compress-every", o.compress_every,
         "Re-compact to the budget every N decode steps (default: 1 for h2o and streamingllm, else 0 = "
         "after prefill only)")
      ->check(CLI::NonNegativeNumber);
}

engine::CompressionSpec compression_spec_for(const CompressionOptions& o, const std::string& press) {
  engine::CompressionSpec spec;
  spec.method = press;
  if (press == "none") return spec;
  spec.allocator = o.allocator;
  auto& p = spec.params;
  p = kvstore::default_params(press);
  if (o.window) p.window = *o.window;
  if (o.pool_kernel) p.pool_kernel = *o.pool_kernel;
  if (o.pool_type)
    p.pool_type = *o.pool_type == "avg" ? kvstore::PoolType::kAverage : kvstore::PoolType::kMax;
  if (o.sinks) p.sinks = *o.sinks;
  if (o.alpha) p.alpha = *o.alpha;
  if (o.pyramid_beta) p.pyramid_beta = *o.pyramid_beta;
  if (o.head_beta) p.head_beta = *o.head_beta;
  if (o.r_max) p.r_max = *o.r_max;
  p.head_profile = o.head_profile;
  p.ranks = o.ranks;
  if (o.dyna_rate) p.dyna_rate = *o.dyna_rate;
  p.kv_basis = o.kv_basis;
  p.joint_basis = o.joint_basis;
  if (!o.chunk_sizes.empty()) p.chunk_size = o.chunk_sizes.front();
  spec.compress_every = o.compress_every.value_or(kvstore::default_compress_every(press));
  return spec;
}

std::vector<engine::CompressionSpec> compression_specs(const CompressionOptions& o,
                                                       comm::Communicator& comm) {
  std::vector<engine::CompressionSpec> specs;
  std::string error;
  try {
    const std::vector<std::string> presses = o.presses.empty() ? std::vector<std::string>{"none"} : o.presses;
    for (const auto& press : presses) {
      if (press == "none") {
        specs.push_back(compression_spec_for(o, press));
        continue;
      }
      if (o.budgets.empty() && o.budget_tokens.empty()) {
        throw std::invalid_argument(
            fmt::format("--press {} needs a budget: --budget F or --budget-tokens B", press));
      }
      // one budget form set, the other 0
      const auto add = [&](int64_t chunk, double fraction, int64_t tokens) {
        auto spec = compression_spec_for(o, press);
        spec.params.chunk_size = chunk;
        spec.budget_fraction = fraction;
        spec.budget_tokens = tokens;
        engine::validate(spec);
        specs.push_back(spec);
      };
      const std::vector<int64_t> chunks = o.chunk_sizes.empty() ? std::vector<int64_t>{1} : o.chunk_sizes;
      for (int64_t chunk : chunks) {
        for (double fraction : o.budgets) add(chunk, fraction, 0);
        for (int64_t tokens : o.budget_tokens) add(chunk, 0.0, tokens);
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  comm::check_all(comm, error.empty(), error);
  return specs;
}

}  // namespace kvshrink::launch
