// What a front end submits (generate, eval, bench-throughput, batch, serve) and what it reads back.
// A request carries its prompt, sampling parameters, stop conditions and its own compression
// settings; the engine turns it into a sequence (DESIGN.md §8).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/compression/compression_spec.h"
#include "engine/generation/finish_reason.h"
#include "engine/generation/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::engine {

struct RequestResult;

struct Request {
  std::vector<TokenId> prompt;
  // Prefilled after the prompt's compression point, before the first token is sampled: the
  // question of a query-agnostic run (the prompt is compressed before the question arrives).
  std::vector<TokenId> continuation;
  SamplingParams sampling;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;  // stop strings: generation ends when the text contains one
  bool ignore_eos = false;        // run to max_tokens past end-of-generation tokens (benchmarks)
  CompressionSpec compression;    // method "none" = full KV
  // Further copies of this request, one per setting, sharing its prefill (as vLLM's n > 1 shares
  // a prompt): when the prompt is prefilled, each fork is a copy of the KV compressed under its
  // own setting, then prefills the continuation (if any) and decodes alone; the query-aware
  // forks start from the first token sampled at full KV. The request itself must be full KV.
  std::vector<CompressionSpec> forks;
  // Called on rank 0 for every generated token as soon as it is sampled; returning false stops the
  // sequence (a client gone). May be empty.
  std::function<bool(TokenId)> on_token;
  // Called on rank 0 once a variant has ended (0: the request itself, i: forks[i - 1]), with its
  // result final. May be empty.
  std::function<void(size_t variant, const RequestResult&)> on_finish;
  // Called on rank 0 before every step while the request waits or runs; true ends it (and its
  // forks) at once as kStoppedByCaller and frees its KV (a client gone, a shutdown deadline).
  // May be empty.
  std::function<bool()> cancelled;
};

// Rank 0's record of one request; other ranks get empty results.
struct RequestResult {
  std::vector<TokenId> tokens;  // generated, without the prompt (a matched stop string's tokens included)
  FinishReason finish = FinishReason::kMaxTokens;
  std::string error;  // with kError: why the request failed alone
  int64_t prompt_tokens = 0;
  int64_t preemptions = 0;
  double arrival_seconds = 0.0;       // since the run started
  double start_seconds = 0.0;         // since the run started: its first rows were scheduled
  double first_token_seconds = 0.0;   // since the run started
  std::vector<double> token_seconds;  // [i]: when tokens[i] was sampled, since the run started
  double attention_seconds = 0.0;     // rank 0's attention time in its steps (shared evenly in a step)
  double finish_seconds = 0.0;
  uint64_t kv_bytes_held = 0;  // all ranks' token bytes right before the sequence ended
  uint64_t kv_bytes_full = 0;  // what full KV would hold for the same positions
  // All ranks' token bytes at the compression point (right after the first compression; full KV:
  // right after the prompt's prefill), and what full KV holds there.
  uint64_t kv_bytes_compressed = 0;
  uint64_t kv_bytes_full_compressed = 0;
  int64_t budget_tokens = 0;         // per head on average, as resolved for the prompt (0: full KV)
  std::vector<RequestResult> forks;  // [i]: the result of Request::forks[i]
};

}  // namespace kvshrink::engine
