// Command-line options for KV compression, shared by generate, bench and eval:
// --press NAME (eval and bench: a list), --budget F or --budget-tokens B (eval and bench: lists),
// --allocator, the presses' own parameters, --chunk-size (eval and bench: a list) and --compress-every.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/compression/compression_spec.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct CompressionOptions {
  std::vector<std::string> presses;
  std::vector<double> budgets;
  std::vector<int64_t> budget_tokens;
  std::string allocator;
  // Unset = the method's own default (kvstore/press_registry.h).
  std::optional<int64_t> window, pool_kernel, sinks, compress_every;
  std::vector<int64_t> chunk_sizes;  // --chunk-size (eval, bench: a list); empty = 1
  std::optional<std::string> pool_type;
  std::optional<double> alpha, pyramid_beta, head_beta, r_max;
  std::string head_profile;
  std::vector<int32_t> ranks;
  std::optional<double> dyna_rate;
  std::string kv_basis;
  bool joint_basis = false;
};

// several: --press and the budgets take comma-separated lists (eval, bench).
void add_compression_options(CLI::App& cmd, CompressionOptions& options, bool several);

// The spec of `press` with the options' press parameters and no budget set ("none": full KV).
// Does not validate: an unknown press is refused by engine::validate.
engine::CompressionSpec compression_spec_for(const CompressionOptions& options, const std::string& press);

// Every (press, budget) the options name, in order; {full KV} when no press is given.
// Collective: a bad combination (no budget, a token budget below the window, ...) is a
// comm::JobError on every rank.
std::vector<engine::CompressionSpec> compression_specs(const CompressionOptions& options,
                                                       comm::Communicator& comm);

}  // namespace kvshrink::launch
