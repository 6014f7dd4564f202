// The JSON a client gets back for a completion: the whole response, or the server-sent-event
// chunks of a stream (text deltas, the last one with finish_reason, then usage if asked for).
// Both carry the extension `kv`: the press and budget the request ran under and the share of full
// KV its sequence held.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "engine/serving/request.h"
#include "launch/openai/api_error.h"
#include "launch/openai/completion_request.h"

namespace kvshrink::launch {

// Names one response: its id ("cmpl-..." / "chatcmpl-...") and creation time (Unix seconds).
struct ResponseIdentity {
  std::string id;
  int64_t created = 0;
};
ResponseIdentity new_response_identity(Endpoint endpoint);

// "stop", "length" or "abort" (vLLM's word for a request its client gave up on).
const char* openai_finish_reason(engine::FinishReason reason);

nlohmann::json usage_json(const engine::RequestResult& result);
nlohmann::json kv_json(const CompletionJob& job, const engine::RequestResult& result);

// The error a request that failed in the engine (RequestResult::error, e.g. larger than the KV
// pool) is answered with: 422 engine_error.
ApiError engine_error(const engine::RequestResult& result);

// The whole response of a finished request (not streamed).
nlohmann::json completion_response(const CompletionJob& job, const ResponseIdentity& identity,
                                   const std::string& text, const engine::RequestResult& result);

// One stream chunk with a text delta; `finish` on the last (with the kv extension); chat's
// first chunk carries the assistant role.
nlohmann::json stream_chunk(const CompletionJob& job, const ResponseIdentity& identity,
                            const std::string& delta, bool first, const engine::RequestResult* finish);
// The chunk after the last one when stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk(const CompletionJob& job, const ResponseIdentity& identity,
                           const engine::RequestResult& result);

}  // namespace kvshrink::launch
