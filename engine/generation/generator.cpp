#include "engine/generation/generator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"

namespace kvshrink::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Generator::Generator(LlamaModel& model, const Tokenizer& tokenizer, comm::Communicator& comm,
                     int64_t context_size)
    : model_(model), tokenizer_(tokenizer), comm_(comm), context_size_(context_size) {}

GenerationResult Generator::generate(std::vector<TokenId> prompt, int64_t max_tokens,
                                     const SamplingParams& params,
                                     const std::function<void(TokenId)>& on_token) {
  auto kv = model_.make_kv_store();
  return generate(kv, std::move(prompt), max_tokens, params, on_token);
}

GenerationResult Generator::generate(kvstore::KvStore& kv, std::vector<TokenId> prompt, int64_t max_tokens,
                                     const SamplingParams& params,
                                     const std::function<void(TokenId)>& on_token,
                                     const KvCompression& compression) {
  const Prefilled prefilled = prefill(kv, std::move(prompt), max_tokens);
  KvCompression resolved = compression;
  if (resolved.compressor) {
    if (resolved.budget_tokens == 0) {
      resolved.budget_tokens = std::max<int64_t>(
          1, std::llround(resolved.budget_fraction * static_cast<double>(kv.next_position())));
    }
    resolved.compressor->compress(kv, resolved.budget_tokens);
  }
  return decode(kv, prefilled, max_tokens, params, on_token, resolved);
}

Prefilled Generator::prefill(kvstore::KvStore& kv, std::vector<TokenId> prompt, int64_t max_tokens) {
  comm_.broadcast_vector(prompt, 0);
  max_tokens = comm_.broadcast_value(max_tokens, 0);
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t n_positions = kv.next_position() + n_prompt;
  comm::check_all(comm_, n_prompt > 0, "the prompt is empty");
  comm::check_all(
      comm_, n_positions < context_size_,
      fmt::format("the prompt has {} tokens but the context holds {} (it must leave room for at least "
                  "one generated token; see --ctx-size)",
                  n_positions, context_size_));
  Prefilled out;
  out.prompt_tokens = n_prompt;
  const auto start = std::chrono::steady_clock::now();
  out.logits = model_.forward(prompt, kv, LogitsFor::kLastToken);
  out.seconds = seconds_since(start);
  return out;
}

GenerationResult Generator::decode(kvstore::KvStore& kv, const Prefilled& prefilled, int64_t max_tokens,
                                   const SamplingParams& params, const std::function<void(TokenId)>& on_token,
                                   const KvCompression& compression) {
  max_tokens = comm_.broadcast_value(max_tokens, 0);
  GenerationResult result;
  result.prompt_tokens = prefilled.prompt_tokens;
  result.prefill_seconds = prefilled.seconds;
  Sampler sampler(params);  // used on rank 0 only
  const bool coordinator = comm_.world().is_coordinator();
  std::vector<float> logits = prefilled.logits;

  const auto start = std::chrono::steady_clock::now();
  int64_t steps = 0;
  while (static_cast<int64_t>(result.tokens.size()) < max_tokens) {
    TokenId next = coordinator ? sampler.sample(logits) : 0;
    next = comm_.broadcast_value(next, 0);
    result.tokens.push_back(next);
    if (coordinator && on_token) on_token(next);
    if (tokenizer_.is_end_of_generation(next)) {
      result.stop_reason = FinishReason::kEndOfGeneration;
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) == max_tokens) break;
    if (kv.next_position() >= context_size_) {
      result.stop_reason = FinishReason::kContextFull;
      break;
    }
    const TokenId step[] = {next};
    logits = model_.forward(step, kv, LogitsFor::kLastToken);
    ++steps;
    if (compression.compressor && compression.every > 0 && steps % compression.every == 0) {
      // A method that keeps every token (DynaKV) keeps its share of a growing sequence.
      const bool share = compression.compressor->keeps_every_token() && compression.budget_fraction > 0.0;
      compression.compressor->compress(
          kv, share ? std::llround(compression.budget_fraction * static_cast<double>(kv.next_position()))
                    : compression.budget_tokens);
    }
  }
  result.decode_seconds = seconds_since(start);
  result.kv_bytes_held = kv.bytes_held();
  result.kv_bytes_full = kv.full_bytes();
  return result;
}

}  // namespace kvshrink::engine
