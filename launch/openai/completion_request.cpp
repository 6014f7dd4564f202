#include "launch/openai/completion_request.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "engine/tokenizer/chat_template.h"
#include "launch/openai/api_error.h"

namespace kvshrink::launch {
namespace {

using nlohmann::json;

[[noreturn]] void bad_shape(const std::string& field, const std::string& what) {
  throw ApiError(400, fmt::format("'{}' must be {}", field, what), field, "invalid_type");
}

[[noreturn]] void bad_value(const std::string& field, const std::string& message) {
  throw ApiError(422, message, field, "invalid_value");
}

// The field's value, or null when absent or null.
const json& field(const json& body, const char* name) {
  static const json null;
  const auto it = body.find(name);
  return it == body.end() ? null : *it;
}

double number(const json& body, const char* name, double fallback) {
  const json& v = field(body, name);
  if (v.is_null()) return fallback;
  if (!v.is_number()) bad_shape(name, "a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) bad_value(name, fmt::format("'{}' must be finite", name));
  return x;
}

int64_t integer(const json& body, const char* name, int64_t fallback) {
  const json& v = field(body, name);
  if (v.is_null()) return fallback;
  if (!v.is_number_integer()) bad_shape(name, "an integer");
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad_value(name, fmt::format("'{}' is too large", name));
  return v.get<int64_t>();
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json& v = field(body, name);
  if (v.is_null()) return fallback;
  if (!v.is_boolean()) bad_shape(name, "true or false");
  return v.get<bool>();
}

std::string text_content(const json& content, const std::string& name) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad_shape(name, "a string or an array of text parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || field(part, "type") != "text" || !field(part, "text").is_string())
      bad_shape(name, "text parts ({\"type\": \"text\", \"text\": ...}); other parts are not supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<engine::TokenId> chat_prompt(const json& body, const engine::Tokenizer& tokenizer) {
  const json& messages = field(body, "messages");
  if (!messages.is_array() || messages.empty()) bad_shape("messages", "a non-empty array of messages");
  std::vector<engine::ChatMessage> turns;
  for (const auto& m : messages) {
    if (!m.is_object() || !field(m, "role").is_string()) bad_shape("messages", "objects with a 'role'");
    const auto role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer")
      bad_value("messages",
                fmt::format("unsupported role '{}' (system, developer, user or assistant)", role));
    turns.push_back(
        {role == "developer" ? "system" : role, text_content(field(m, "content"), "messages.content")});
  }
  return tokenizer.encode(engine::render_chatml(turns));
}

std::vector<engine::TokenId> completion_prompt(const json& body, const engine::Tokenizer& tokenizer) {
  const json& prompt = field(body, "prompt");
  if (prompt.is_string()) return tokenizer.encode(prompt.get<std::string>());
  if (!prompt.is_array() || prompt.empty())
    bad_shape("prompt", "a string, an array of one string, or an array of token ids");
  if (prompt[0].is_string()) {
    if (prompt.size() != 1) bad_value("prompt", "one prompt per request (n = 1): send the others separately");
    return tokenizer.encode(prompt[0].get<std::string>());
  }
  std::vector<engine::TokenId> ids;
  for (const auto& id : prompt) {
    if (!id.is_number_integer())
      bad_shape("prompt", "a string, an array of one string, or an array of token ids");
    const auto v = id.get<int64_t>();
    const auto vocab = static_cast<int64_t>(tokenizer.vocab_size());
    if (v < 0 || v >= vocab)
      bad_value("prompt", fmt::format("token id {} outside the vocabulary [0, {})", v, vocab));
    ids.push_back(static_cast<engine::TokenId>(v));
  }
  return ids;
}

std::vector<std::string> stop_strings(const json& body) {
  const json& stop = field(body, "stop");
  if (stop.is_null()) return {};
  if (stop.is_string()) return {stop.get<std::string>()};
  if (!stop.is_array()) bad_shape("stop", "a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& s : stop) {
    if (!s.is_string()) bad_shape("stop", "a string or an array of strings");
    if (!s.get<std::string>().empty()) out.push_back(s.get<std::string>());
  }
  return out;
}

// Features the engine does not have: refused, never silently ignored.
void refuse_unsupported(const json& body) {
  if (integer(body, "n", 1) != 1) bad_value("n", "only n = 1 is supported");
  if (integer(body, "best_of", 1) != 1) bad_value("best_of", "only best_of = 1 is supported");
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (number(body, name, 0.0) != 0.0) bad_value(name, fmt::format("'{}' is not supported", name));
  }
  if (number(body, "repetition_penalty", 1.0) != 1.0)
    bad_value("repetition_penalty", "'repetition_penalty' is not supported");
  if (boolean(body, "echo", false)) bad_value("echo", "'echo' is not supported");
  const json& logprobs = field(body, "logprobs");
  if (!logprobs.is_null() && logprobs != false) bad_value("logprobs", "'logprobs' is not supported");
}

engine::SamplingParams sampling(const json& body) {
  engine::SamplingParams s;
  s.temperature = static_cast<float>(number(body, "temperature", 1.0));
  if (s.temperature < 0.0f || s.temperature > 2.0f)
    bad_value("temperature", "'temperature' must be in [0, 2]");
  s.top_p = static_cast<float>(number(body, "top_p", 1.0));
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) bad_value("top_p", "'top_p' must be in (0, 1]");
  const int64_t top_k = integer(body, "top_k", 0);
  if (top_k < -1 || top_k > std::numeric_limits<int>::max())
    bad_value("top_k", "'top_k' must be -1, 0 (all) or positive");
  s.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  const int64_t seed = integer(body, "seed", 0);
  if (seed < 0) bad_value("seed", "'seed' must be non-negative");
  s.seed = static_cast<uint64_t>(seed);
  return s;
}

// kv_press / kv_budget over the server's defaults.
engine::CompressionSpec compression(const json& body, const ApiSettings& settings) {
  const json& press = field(body, "kv_press");
  const json& budget = field(body, "kv_budget");
  if (press.is_null() && budget.is_null()) return settings.compression;
  if (!press.is_null() && !press.is_string()) bad_shape("kv_press", "a string (a press name or \"none\")");
  engine::CompressionSpec spec = settings.compression;
  if (press.is_string()) {
    const auto method = press.get<std::string>();
    try {
      spec = method == "none" ? engine::CompressionSpec{} : settings.press_spec(method);
    } catch (const std::exception& e) {
      bad_value("kv_press", e.what());
    }
    if (spec.enabled() && budget.is_null()) {  // the server's budget, if it has one
      spec.budget_fraction = settings.compression.budget_fraction;
      spec.budget_tokens = settings.compression.budget_tokens;
    }
  }
  if (!budget.is_null()) {
    if (!spec.enabled())
      bad_value("kv_budget", "'kv_budget' needs a press: set 'kv_press' (the server runs full KV)");
    spec.budget_fraction = number(body, "kv_budget", 0.0);
    spec.budget_tokens = 0;
    if (!(spec.budget_fraction > 0.0 && spec.budget_fraction <= 1.0))
      bad_value("kv_budget", "'kv_budget' must be a fraction of full KV in (0, 1]");
  }
  if (spec.enabled() && spec.budget_fraction == 0.0 && spec.budget_tokens == 0)
    bad_value("kv_budget",
              fmt::format("kv_press {} needs 'kv_budget' (the server has no default budget)", spec.method));
  try {
    engine::validate(spec);
  } catch (const std::exception& e) {
    bad_value(press.is_null() ? "kv_budget" : "kv_press", e.what());
  }
  return spec;
}

}  // namespace

bool endpoint_for_path(std::string_view path, Endpoint& endpoint) {
  if (path == "/v1/completions") return endpoint = Endpoint::kCompletions, true;
  if (path == "/v1/chat/completions") return endpoint = Endpoint::kChatCompletions, true;
  return false;
}

CompletionJob parse_completion_request(Endpoint endpoint, const json& body,
                                       const engine::Tokenizer& tokenizer, const ApiSettings& settings) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
  CompletionJob job;
  job.endpoint = endpoint;
  const json& model = field(body, "model");
  if (!model.is_null() && !model.is_string()) bad_shape("model", "a string");
  job.model = model.is_string() ? model.get<std::string>() : settings.model_name;
  if (job.model != settings.model_name) {
    throw ApiError(
        404,
        fmt::format("the model '{}' does not exist (this server runs '{}')", job.model, settings.model_name),
        "model", "model_not_found");
  }
  refuse_unsupported(body);
  auto& r = job.request;
  r.prompt = endpoint == Endpoint::kChatCompletions ? chat_prompt(body, tokenizer)
                                                    : completion_prompt(body, tokenizer);
  const int64_t n = static_cast<int64_t>(r.prompt.size());
  const int64_t max_prompt =
      settings.max_prompt_tokens > 0 ? settings.max_prompt_tokens : settings.context_size - 1;
  if (n == 0)
    bad_value(endpoint == Endpoint::kChatCompletions ? "messages" : "prompt", "the prompt is empty");
  if (n > max_prompt || n >= settings.context_size) {
    bad_value(endpoint == Endpoint::kChatCompletions ? "messages" : "prompt",
              fmt::format("the prompt has {} tokens; this server takes at most {} (context {})", n,
                          std::min(max_prompt, settings.context_size - 1), settings.context_size));
  }
  const int64_t limit = settings.max_tokens_limit > 0 ? settings.max_tokens_limit : settings.context_size;
  const char* max_name = "max_tokens";
  if (endpoint == Endpoint::kChatCompletions && !field(body, "max_completion_tokens").is_null())
    max_name = "max_completion_tokens";
  r.max_tokens = integer(body, max_name, std::min(limit, settings.context_size - n));
  if (r.max_tokens < 1) bad_value(max_name, fmt::format("'{}' must be at least 1", max_name));
  if (r.max_tokens > limit)
    bad_value(max_name,
              fmt::format("'{}' {} is above this server's limit {}", max_name, r.max_tokens, limit));
  r.sampling = sampling(body);
  r.stop = stop_strings(body);
  r.ignore_eos = boolean(body, "ignore_eos", false);
  r.compression = compression(body, settings);
  try {
    engine::check_budget_reachable(r.compression, n);
  } catch (const std::exception& e) {
    bad_value("kv_budget", e.what());
  }
  job.stream = boolean(body, "stream", false);
  const json& options = field(body, "stream_options");
  if (!options.is_null()) {
    if (!options.is_object()) bad_shape("stream_options", "an object");
    job.include_usage = boolean(options, "include_usage", false);
  }
  return job;
}

}  // namespace kvshrink::launch
