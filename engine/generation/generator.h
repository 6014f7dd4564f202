// Runs one request through prefill and decode on every rank (SPMD). Rank 0 owns the request: its
// prompt ids are broadcast, it samples each next token and broadcasts it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/compression/kv_compressor.h"
#include "engine/generation/finish_reason.h"
#include "engine/generation/sampler.h"
#include "engine/model/llama_model.h"

namespace kvshrink::engine {

struct GenerationResult {
  std::vector<TokenId> tokens;  // generated tokens, without the prompt
  FinishReason stop_reason = FinishReason::kMaxTokens;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // for tokens.size() - 1 decode steps after the first token
  uint64_t kv_bytes_held = 0;   // this rank's KV bytes at the end
  uint64_t kv_bytes_full = 0;   // what this rank would hold at full KV for the same positions
};

// KV compression during a generation: after prefill, and then every `every` decode steps (0: never
// again), the sequence is compacted back to budget_tokens per head on average. When budget_tokens
// is 0, generate() sets it to budget_fraction x the positions after prefill, and keeps it fixed.
struct KvCompression {
  KvCompressor* compressor = nullptr;
  int64_t budget_tokens = 0;
  double budget_fraction = 0.0;
  int64_t every = 0;
};

// A prompt run through the model: logits of its last token (complete on every rank).
struct Prefilled {
  std::vector<float> logits;
  int64_t prompt_tokens = 0;
  double seconds = 0.0;
};

class Generator {
 public:
  // context_size: most positions a sequence may use (prompt + generated).
  Generator(LlamaModel& model, const Tokenizer& tokenizer, comm::Communicator& comm, int64_t context_size);

  // prompt and params are read on rank 0 (other ranks may pass anything); on_token is called on
  // rank 0 for every generated token as soon as it is sampled. Throws comm::JobError on
  // every rank for an empty prompt or one that leaves no room in the context.
  GenerationResult generate(std::vector<TokenId> prompt, int64_t max_tokens, const SamplingParams& params,
                            const std::function<void(TokenId)>& on_token);

  // The same, continuing a sequence whose first tokens are already in `kv` (e.g. a context
  // prefilled, and later compressed, before its question arrives). `prompt` holds the new tokens.
  GenerationResult generate(kvstore::KvStore& kv, std::vector<TokenId> prompt, int64_t max_tokens,
                            const SamplingParams& params, const std::function<void(TokenId)>& on_token,
                            const KvCompression& compression = {});

  // The two halves of generate(), for callers that share one prefill between several compressed
  // copies of the store (kvshrink eval). prefill() broadcasts the prompt from rank 0 and checks it.
  Prefilled prefill(kvstore::KvStore& kv, std::vector<TokenId> prompt, int64_t max_tokens);
  // Samples from `prefilled.logits`, then decodes on kv (compressing it every compression.every
  // steps when a compressor is given; the prefill compression is the caller's).
  GenerationResult decode(kvstore::KvStore& kv, const Prefilled& prefilled, int64_t max_tokens,
                          const SamplingParams& params, const std::function<void(TokenId)>& on_token,
                          const KvCompression& compression = {});

 private:
  LlamaModel& model_;
  const Tokenizer& tokenizer_;
  comm::Communicator& comm_;
  int64_t context_size_;
};

}  // namespace kvshrink::engine
