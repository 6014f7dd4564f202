// The OpenAI protocol layer on the default model's tokenizer: request bodies checked and turned
// into engine requests (and the status each bad one gets), the text a client sees (stop strings
// cut, held back while streaming), response shapes, and the API key check.
#include <gtest/gtest.h>

#include <memory>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "launch/openai/api_error.h"
#include "launch/openai/api_key.h"
#include "launch/openai/completion_request.h"
#include "launch/openai/completion_response.h"
#include "launch/openai/completion_text.h"
#include "support/test_paths.h"

namespace kvshrink::launch {
namespace {

using nlohmann::json;

class OpenAiApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = std::make_unique<engine::Tokenizer>(
        engine::Tokenizer::from_gguf(engine::GgufFile::open(testing::model_path())));
  }
  static ApiSettings settings() {
    ApiSettings s;
    s.model_name = "m";
    s.context_size = 256;
    s.press_spec = [](const std::string& method) {
      if (method != "snapkv" && method != "h2o")
        throw std::invalid_argument("unknown press '" + method + "'");
      engine::CompressionSpec spec;
      spec.method = method;
      return spec;
    };
    return s;
  }
  static CompletionJob parse(const json& body, Endpoint endpoint = Endpoint::kCompletions) {
    return parse_completion_request(endpoint, body, *tokenizer_, settings());
  }
  // The status parse() refuses `body` with, and the field it names.
  static std::pair<int, std::string> refusal(const json& body, Endpoint endpoint = Endpoint::kCompletions) {
    try {
      parse(body, endpoint);
    } catch (const ApiError& e) {
      return {e.status, e.param};
    }
    return {0, ""};
  }
  static std::unique_ptr<engine::Tokenizer> tokenizer_;
};
std::unique_ptr<engine::Tokenizer> OpenAiApi::tokenizer_;

TEST_F(OpenAiApi, CompletionBodyBecomesARequest) {
  const auto job = parse({{"model", "m"},
                          {"prompt", "Hello there"},
                          {"max_tokens", 7},
                          {"temperature", 0},
                          {"top_p", 0.5},
                          {"top_k", 3},
                          {"seed", 9},
                          {"stop", {"\n", "."}},
                          {"stream", true},
                          {"stream_options", {{"include_usage", true}}}});
  EXPECT_EQ(job.request.prompt, tokenizer_->encode("Hello there"));
  EXPECT_EQ(job.request.max_tokens, 7);
  EXPECT_EQ(job.request.sampling.temperature, 0.0f);
  EXPECT_EQ(job.request.sampling.top_p, 0.5f);
  EXPECT_EQ(job.request.sampling.top_k, 3);
  EXPECT_EQ(job.request.sampling.seed, 9u);
  EXPECT_EQ(job.request.stop, (std::vector<std::string>{"\n", "."}));
  EXPECT_TRUE(job.stream);
  EXPECT_TRUE(job.include_usage);
  EXPECT_FALSE(job.request.compression.enabled());
  // Defaults: the remaining context for max_tokens, OpenAI's temperature 1.
  const auto plain = parse({{"prompt", {1, 2, 3}}});
  EXPECT_EQ(plain.request.prompt, (std::vector<engine::TokenId>{1, 2, 3}));
  EXPECT_EQ(plain.request.max_tokens, 256 - 3);
  EXPECT_EQ(plain.request.sampling.temperature, 1.0f);
  EXPECT_EQ(plain.model, "m");
}

TEST_F(OpenAiApi, ChatBodyUsesTheChatTemplate) {
  const auto job =
      parse({{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_completion_tokens", 5}},
            Endpoint::kChatCompletions);
  EXPECT_EQ(job.request.prompt, tokenizer_->encode(engine::render_chatml({{"user", "Hi"}})));
  EXPECT_EQ(job.request.max_tokens, 5);
  const auto parts =
      parse({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi"}}}}}}}},
            Endpoint::kChatCompletions);
  EXPECT_EQ(parts.request.prompt, job.request.prompt);
}

TEST_F(OpenAiApi, KvExtensionFields) {
  const auto job = parse({{"prompt", std::string(800, 'a')}, {"kv_press", "snapkv"}, {"kv_budget", 0.25}});
  EXPECT_EQ(job.request.compression.method, "snapkv");
  EXPECT_DOUBLE_EQ(job.request.compression.budget_fraction, 0.25);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"kv_press", "nosuch"}, {"kv_budget", 0.5}}),
            std::make_pair(422, std::string("kv_press")));
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"kv_press", "snapkv"}, {"kv_budget", 1.5}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"kv_press", "snapkv"}}).first, 422);  // no budget anywhere
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"kv_budget", 0.5}}).first, 422);      // no press to budget
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"kv_press", 3}}).first, 400);
}

TEST_F(OpenAiApi, BadBodiesGetTheirStatus) {
  EXPECT_EQ(refusal(json::array()).first, 400);
  EXPECT_EQ(refusal({{"prompt", 5}}), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"max_tokens", "ten"}}),
            std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(refusal({{"messages", "hi"}}, Endpoint::kChatCompletions).first, 400);
  EXPECT_EQ(refusal({{"model", "other"}, {"prompt", "hi"}}), std::make_pair(404, std::string("model")));
  EXPECT_EQ(refusal({{"prompt", ""}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", std::string(2000, 'x') + " y z"}}).first, 422);  // past the context
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"max_tokens", 0}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"max_tokens", 257}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"temperature", 2.5}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"top_p", 0}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"n", 2}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", "hi"}, {"logprobs", 3}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", {"a", "b"}}}).first, 422);
  EXPECT_EQ(refusal({{"prompt", {1, -4}}}).first, 422);
  EXPECT_EQ(
      refusal({{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, Endpoint::kChatCompletions).first,
      422);
}

TEST_F(OpenAiApi, ErrorBodyIsOpenAiShaped) {
  const json body = error_body(ApiError(422, "bad budget", "kv_budget", "invalid_value"));
  EXPECT_EQ(body["error"]["message"], "bad budget");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "kv_budget");
  EXPECT_EQ(body["error"]["code"], "invalid_value");
  EXPECT_TRUE(error_body(ApiError(401, "key"))["error"]["param"].is_null());
  EXPECT_EQ(error_body(ApiError(401, "key"))["error"]["type"], "authentication_error");
}

// Text pushed token by token, with a stop string: what is sent never contains the stop string
// or anything after it, and while it may still begin one, it is held back.
TEST_F(OpenAiApi, CompletionTextCutsAtTheStopString) {
  const auto ids = tokenizer_->encode("one two three four five");
  CompletionText text(*tokenizer_, {"three f"});
  std::string streamed;
  for (const auto id : ids) {
    streamed += text.push(id);
    EXPECT_EQ(streamed.find("three"), std::string::npos) << streamed;  // "three " may begin the stop
  }
  streamed += text.finish();
  EXPECT_EQ(streamed, "one two ");
  EXPECT_EQ(text.sent(), streamed);

  CompletionText plain(*tokenizer_, {});
  std::string all;
  for (const auto id : ids) all += plain.push(id);
  all += plain.finish();
  EXPECT_EQ(all, "one two three four five");
}

TEST_F(OpenAiApi, ResponsesCarryUsageAndKv) {
  auto job = parse({{"prompt", "hi"}});
  engine::RequestResult result;
  result.tokens = {5, 6, 7};
  result.prompt_tokens = 2;
  result.finish = engine::FinishReason::kMaxTokens;
  result.kv_bytes_held = 25;
  result.kv_bytes_full = 100;
  const auto id = new_response_identity(Endpoint::kCompletions);
  EXPECT_EQ(id.id.rfind("cmpl-", 0), 0u);
  const json whole = completion_response(job, id, "abc", result);
  EXPECT_EQ(whole["choices"][0]["text"], "abc");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 3);
  EXPECT_EQ(whole["usage"]["total_tokens"], 5);
  EXPECT_DOUBLE_EQ(whole["kv"]["share_held"].get<double>(), 0.25);
  job.endpoint = Endpoint::kChatCompletions;
  const json first = stream_chunk(job, id, "", true, nullptr);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  result.finish = engine::FinishReason::kStopString;
  EXPECT_EQ(stream_chunk(job, id, "", false, &result)["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(usage_chunk(job, id, result)["choices"].empty());
}

TEST(ApiKey, ConstantTimeCheck) {
  EXPECT_TRUE(api_key_matches("", ""));
  EXPECT_TRUE(api_key_matches("", "Bearer anything"));
  EXPECT_TRUE(api_key_matches("sekret", "Bearer sekret"));
  EXPECT_FALSE(api_key_matches("sekret", "Bearer sekreT"));
  EXPECT_FALSE(api_key_matches("sekret", "Bearer sekret2"));
  EXPECT_FALSE(api_key_matches("sekret", "Bearer sekre"));
  EXPECT_FALSE(api_key_matches("sekret", "sekret"));
  EXPECT_FALSE(api_key_matches("sekret", ""));
}

}  // namespace
}  // namespace kvshrink::launch
