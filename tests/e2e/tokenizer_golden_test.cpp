// The tokenizer on the real SmolLM2 vocab against llama.cpp's answers, recorded by
// scripts/golden_tokenizer.py in tests/golden/tokenizer_smollm2.json (paths: support/test_paths.h).
// A missing model or golden file fails, never skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "support/test_paths.h"

namespace kvshrink::engine {
namespace {

using nlohmann::json;

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

// One encode case: the input bytes ("text", or "text_hex" for input that is not valid UTF-8).
std::string case_input(const json& c) {
  return c.contains("text") ? c.at("text").get<std::string>() : from_hex(c.at("text_hex").get<std::string>());
}

class TokenizerGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      const std::string golden_path = testing::golden_path("tokenizer_smollm2.json");
      std::ifstream golden_file(golden_path);
      if (!golden_file) throw std::runtime_error("cannot open " + golden_path);
      golden_ = std::make_unique<json>(json::parse(golden_file));
      tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(testing::model_path())));
    } catch (const std::exception& error) {
      setup_error_ = error.what();
    }
  }
  static void TearDownTestSuite() {
    tokenizer_.reset();
    golden_.reset();
  }
  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "tokenizer golden test setup failed: " << setup_error_;
  }

  static const json& golden() { return *golden_; }
  static const Tokenizer& tokenizer() { return *tokenizer_; }

 private:
  static inline std::unique_ptr<json> golden_;
  static inline std::unique_ptr<Tokenizer> tokenizer_;
  static inline std::string setup_error_;
};

TEST_F(TokenizerGolden, VocabMatchesLlamaCpp) {
  EXPECT_EQ(tokenizer().vocab_size(), golden().at("vocab_size").get<size_t>());
  EXPECT_EQ(tokenizer().bos_id(), golden().at("bos_id").get<TokenId>());
  EXPECT_EQ(tokenizer().eos_id(), golden().at("eos_id").get<TokenId>());
  // add_bos_token is false in this GGUF: llama.cpp adds no BOS even when asked to add specials.
  EXPECT_FALSE(golden().at("add_bos").get<bool>());
  EXPECT_EQ(tokenizer().encode("hi"), golden().at("ids_with_add_special_hi").get<std::vector<TokenId>>());
}

TEST_F(TokenizerGolden, EncodeMatchesLlamaCpp) {
  const json& cases = golden().at("encode");
  ASSERT_GE(cases.size(), 60u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const std::string input = case_input(c);
    SCOPED_TRACE("encode case " + std::to_string(i) + ": \"" + input.substr(0, 200) + "\"");
    EXPECT_EQ(tokenizer().encode(input, c.at("parse_special").get<bool>()),
              c.at("ids").get<std::vector<TokenId>>());
  }
}

TEST_F(TokenizerGolden, DecodeMatchesLlamaCpp) {
  for (const json& c : golden().at("decode")) {
    const auto ids = c.at("ids").get<std::vector<TokenId>>();
    const bool render_special = c.at("render_special").get<bool>();
    EXPECT_EQ(tokenizer().decode(ids, render_special), from_hex(c.at("bytes_hex").get<std::string>()))
        << "render_special=" << render_special << " ids=" << c.at("ids").dump();
  }
}

// Valid UTF-8 input comes back exactly: with special tokens rendered for every case, and without
// rendering for the cases that hold no control token.
TEST_F(TokenizerGolden, EncodeDecodeRoundTrips) {
  size_t plain_cases = 0;
  for (const json& c : golden().at("encode")) {
    if (!c.contains("text")) continue;
    const std::string text = c.at("text").get<std::string>();
    const std::vector<TokenId> ids = tokenizer().encode(text, c.at("parse_special").get<bool>());
    EXPECT_EQ(tokenizer().decode(ids, /*render_special=*/true), text);
    const bool has_control_token =
        std::any_of(ids.begin(), ids.end(), [](TokenId id) { return tokenizer().token_bytes(id).empty(); });
    if (has_control_token) continue;
    ++plain_cases;
    EXPECT_EQ(tokenizer().decode(ids), text);
  }
  EXPECT_GE(plain_cases, 60u);
}

TEST_F(TokenizerGolden, StreamingDecoderMatchesDecode) {
  for (const json& c : golden().at("encode")) {
    if (!c.contains("text")) continue;
    const auto ids = c.at("ids").get<std::vector<TokenId>>();
    StreamingDecoder decoder(tokenizer());
    std::string streamed;
    for (TokenId id : ids) streamed += decoder.push(id);
    streamed += decoder.finish();
    EXPECT_EQ(streamed, tokenizer().decode(ids)) << c.at("text").get<std::string>();
  }
}

TEST_F(TokenizerGolden, EndOfGenerationMatchesLlamaCpp) {
  const auto expected = golden().at("end_of_generation_ids").get<std::vector<TokenId>>();
  std::vector<TokenId> actual;
  for (TokenId id = 0; id < static_cast<TokenId>(tokenizer().vocab_size()); ++id) {
    if (tokenizer().is_end_of_generation(id)) actual.push_back(id);
  }
  EXPECT_EQ(actual, expected);
  EXPECT_TRUE(tokenizer().is_end_of_generation(2));  // <|im_end|>
  EXPECT_TRUE(tokenizer().is_end_of_generation(0));  // <|endoftext|>
}

TEST_F(TokenizerGolden, ChatTemplateTokenizesLikeLlamaCpp) {
  const std::string prompt = render_chatml({{"user", "What is the capital of France? Answer in one word."}});
  const json& cases = golden().at("encode");
  const auto golden_case = std::find_if(cases.begin(), cases.end(), [&](const json& c) {
    return c.contains("text") && c.at("text").get<std::string>() == prompt;
  });
  ASSERT_NE(golden_case, cases.end()) << "no golden case holds the rendered ChatML prompt";
  const std::vector<TokenId> ids = tokenizer().encode(prompt);
  EXPECT_EQ(ids, golden_case->at("ids").get<std::vector<TokenId>>());
  EXPECT_EQ(ids.front(), 1);  // <|im_start|> is also BOS: no separate BOS
}

TEST_F(TokenizerGolden, Encodes100KilobytesWellUnderASecond) {
  std::string text;
  for (size_t i = 0; text.size() < 100 * 1024; ++i) {
    const json& c = golden().at("encode")[i % golden().at("encode").size()];
    if (c.contains("text")) text += c.at("text").get<std::string>() + "\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<TokenId> ids = tokenizer().encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 0.5) << ids.size() << " tokens";
  EXPECT_EQ(tokenizer().decode(ids, /*render_special=*/true), text);
}

}  // namespace
}  // namespace kvshrink::engine
