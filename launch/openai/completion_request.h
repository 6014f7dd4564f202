// The body of POST /v1/completions or /v1/chat/completions (also a batch line's body), checked
// and turned into an engine::Request. Fields: model, prompt (a string, one string in an array, or
// token ids) or messages (role + content, the model's chat template), max_tokens (chat also
// max_completion_tokens), temperature, top_p, top_k, seed, stop, n (1), stream, stream_options
// {include_usage}, ignore_eos; extensions kv_press (a method or "none") and kv_budget (a fraction
// of full KV in (0, 1]). Unknown fields are ignored; features the engine lacks (n > 1, logprobs,
// echo, penalties) are refused with 422 rather than silently dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/compression/compression_spec.h"
#include "engine/serving/request.h"
#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::launch {

enum class Endpoint { kCompletions, kChatCompletions };

// The server's (or batch job's) settings that a request is checked against and defaults to.
struct ApiSettings {
  std::string model_name;               // what /v1/models lists; a body naming another model gets 404
  int64_t context_size = 0;             // positions of one sequence (prompt + generated)
  int64_t max_prompt_tokens = 0;        // 0 = context_size - 1
  int64_t max_tokens_limit = 0;         // most tokens one request may ask for; 0 = context_size
  engine::CompressionSpec compression;  // the default press and budget (--press, --budget)
  // The spec of press `method` with the server's press parameters (window, pooling, ...), no budget
  // set; throws std::invalid_argument for an unknown method.
  std::function<engine::CompressionSpec(const std::string& method)> press_spec;
};

struct CompletionJob {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  engine::Request request;  // prompt tokens, sampling, stop strings, max_tokens, compression
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Throws ApiError: 400 for a body of the wrong shape, 404 for another model, 422 for values out of
// range or unsupported (the prompt too long for the context, an unknown press, a budget outside (0, 1]).
CompletionJob parse_completion_request(Endpoint endpoint, const nlohmann::json& body,
                                       const engine::Tokenizer& tokenizer, const ApiSettings& settings);

// "/v1/completions" -> kCompletions, "/v1/chat/completions" -> kChatCompletions; false otherwise.
bool endpoint_for_path(std::string_view path, Endpoint& endpoint);

}  // namespace kvshrink::launch
