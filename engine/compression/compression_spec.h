// One KV compression setting as the user asks for it: a method (press + allocator), its
// parameters and a budget, either a fraction of full-KV bytes or tokens per head.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/compression/kv_compressor.h"
#include "kvstore/press_params.h"

namespace kvshrink::engine {

struct CompressionSpec {
  std::string method = "none";  // a name from kvstore::method_names(), or "none" (full KV)
  std::string allocator;        // "" = the method's own
  kvstore::PressParams params;
  double budget_fraction = 0.0;  // of full-KV bytes, in (0, 1]; 0 = not set
  int64_t budget_tokens = 0;     // per kv head, always-kept tokens included; 0 = not set
  int64_t compress_every = 0;    // decode steps between re-compactions to the budget; 0 = prefill only

  bool enabled() const { return method != "none"; }
  // Tokens per head for a sequence of n_positions: budget_tokens, or round(fraction * n_positions).
  int64_t budget_tokens_for(int64_t n_positions) const;
  // "snapkv 25%", "snapkv 128 tokens", "snapkv 25% chunk 8", "full KV"
  std::string label() const;
};

// Throws std::invalid_argument for an unknown method or allocator, a budget out of (0, 1], both or
// neither budget form, a token budget below the observation window, bad parameters.
void validate(const CompressionSpec& spec);

// Throws std::invalid_argument when --window, --sinks or --pool-kernel exceeds the context.
void check_fits_context(const CompressionSpec& spec, int64_t context);

// Throws std::invalid_argument ("<method> cannot meet the budget: ...") when the budget resolved
// for a sequence of n_positions (budget_tokens_for) is below the tokens per kv head the press
// always keeps (its observation window or sinks, or the whole sequence when shorter). Every rank
// computes the same answer: call it on each, inside comm::check_all or a collective try, where a
// fraction budget is resolved after prefill (validate has refused a token budget below the window).
void check_budget_reachable(const CompressionSpec& spec, int64_t n_positions);

// The press and allocator of spec for this model. Collective: spec is validated (and checked to fit
// the model's trained context); with the headkv allocator the head profile (params.head_profile, or
// the default path next to model_path) is read on every rank and must fit the model
// (model_identity); failures are a comm::JobError on every rank.
// KVzip's repeat instruction is encoded with `tokenizer`.
std::unique_ptr<KvCompressor> make_compressor(const CompressionSpec& spec, LlamaModel& model,
                                              comm::Communicator& comm,
                                              const std::filesystem::path& model_path,
                                              const std::string& model_identity, const Tokenizer& tokenizer);

}  // namespace kvshrink::engine
