#include "launch/openai/completion_response.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <random>

namespace kvshrink::launch {

using nlohmann::json;

namespace {

bool chat(const CompletionJob& job) {
  return job.endpoint == Endpoint::kChatCompletions;
}

json envelope(const CompletionJob& job, const ResponseIdentity& identity, const char* object) {
  return {{"id", identity.id}, {"object", object}, {"created", identity.created}, {"model", job.model}};
}

}  // namespace

ResponseIdentity new_response_identity(Endpoint endpoint) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {fmt::format("{}-{:016x}{:08x}", endpoint == Endpoint::kChatCompletions ? "chatcmpl" : "cmpl", salt,
                      counter.fetch_add(1)),
          std::chrono::duration_cast<std::chrono::seconds>(now).count()};
}

const char* openai_finish_reason(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kMaxTokens:
    case engine::FinishReason::kContextFull:
      return "length";
    case engine::FinishReason::kStoppedByCaller:
    case engine::FinishReason::kError:
      return "abort";
    default:
      return "stop";
  }
}

ApiError engine_error(const engine::RequestResult& result) {
  return ApiError(422, result.error, "", "engine_error");
}

json usage_json(const engine::RequestResult& result) {
  const auto completion = static_cast<int64_t>(result.tokens.size());
  return {{"prompt_tokens", result.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", result.prompt_tokens + completion}};
}

json kv_json(const CompletionJob& job, const engine::RequestResult& result) {
  const auto& spec = job.request.compression;
  const auto share = [](uint64_t held, uint64_t full) {
    return full > 0 ? static_cast<double>(held) / static_cast<double>(full) : 1.0;
  };
  return {{"press", spec.method},
          {"budget", spec.enabled() && spec.budget_fraction > 0.0 ? json(spec.budget_fraction) : json()},
          {"bytes_held", result.kv_bytes_held},
          {"bytes_full", result.kv_bytes_full},
          {"share_held", share(result.kv_bytes_held, result.kv_bytes_full)},
          {"share_at_compression", share(result.kv_bytes_compressed, result.kv_bytes_full_compressed)},
          {"preemptions", result.preemptions}};
}

json completion_response(const CompletionJob& job, const ResponseIdentity& identity, const std::string& text,
                         const engine::RequestResult& result) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(result.finish)}};
  if (chat(job)) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  json out = envelope(job, identity, chat(job) ? "chat.completion" : "text_completion");
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(result);
  out["kv"] = kv_json(job, result);
  return out;
}

json stream_chunk(const CompletionJob& job, const ResponseIdentity& identity, const std::string& delta,
                  bool first, const engine::RequestResult* finish) {
  json choice = {{"index", 0},
                 {"logprobs", nullptr},
                 {"finish_reason", finish ? json(openai_finish_reason(finish->finish)) : json()}};
  if (chat(job)) {
    json d = json::object();
    if (first) d["role"] = "assistant";
    if (!delta.empty() || first) d["content"] = delta;
    choice["delta"] = d;
  } else {
    choice["text"] = delta;
  }
  json out = envelope(job, identity, chat(job) ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array({choice});
  if (job.include_usage) out["usage"] = nullptr;
  if (finish) out["kv"] = kv_json(job, *finish);
  return out;
}

json usage_chunk(const CompletionJob& job, const ResponseIdentity& identity,
                 const engine::RequestResult& result) {
  json out = envelope(job, identity, chat(job) ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(result);
  return out;
}

}  // namespace kvshrink::launch
