// Tokenizer::from_gguf on tiny GGUF files: the keys it reads and the files it refuses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::engine {
namespace {

// "<|im_start|>" and "<|im_end|>" (ids 0, 1), then one token per byte (id 2 + b), then "hi".
GgufWriter tokenizer_file(const std::string& pre) {
  std::vector<std::string> tokens = {"<|im_start|>", "<|im_end|>"};
  std::vector<int32_t> types = {3, 3};
  for (int byte = 0; byte < 256; ++byte) {
    tokens.push_back(encode_byte_level(std::string(1, static_cast<char>(byte))));
    types.push_back(1);
  }
  tokens.push_back("hi");
  types.push_back(1);

  GgufWriter writer;
  writer.set_string("tokenizer.ggml.model", "gpt2");
  writer.set_string("tokenizer.ggml.pre", pre);
  writer.set_string_array("tokenizer.ggml.tokens", tokens);
  writer.set_int32_array("tokenizer.ggml.token_type", types);
  writer.set_string_array("tokenizer.ggml.merges", {"h i"});
  writer.set_uint32("tokenizer.ggml.bos_token_id", 0);
  writer.set_uint32("tokenizer.ggml.eos_token_id", 1);
  return writer;
}

class TokenizerFromGguf : public ::testing::Test {
 protected:
  Tokenizer load(const GgufWriter& writer) {
    writer.write(path_);
    return Tokenizer::from_gguf(GgufFile::open(path_));
  }
  void expect_refused(const GgufWriter& writer) {
    writer.write(path_);
    const GgufFile file = GgufFile::open(path_);
    EXPECT_THROW(Tokenizer::from_gguf(file), GgufError);
  }
  void TearDown() override { std::filesystem::remove(path_); }

  std::filesystem::path path_ = std::filesystem::temp_directory_path() /
                                ("kvshrink_tokenizer_gguf_test_" + std::to_string(::getpid()) + ".gguf");
};

constexpr TokenId kHi = 2 + 256;

TEST_F(TokenizerFromGguf, ReadsVocabMergesAndSpecialIds) {
  const Tokenizer tokenizer = load(tokenizer_file("smollm"));
  EXPECT_EQ(tokenizer.vocab_size(), 259u);
  EXPECT_EQ(tokenizer.bos_id(), 0);
  EXPECT_EQ(tokenizer.eos_id(), 1);
  EXPECT_TRUE(tokenizer.is_end_of_generation(1));
  EXPECT_EQ(tokenizer.encode("<|im_start|>hi 7"), (std::vector<TokenId>{0, kHi, 2 + ' ', 2 + '7'}));
  EXPECT_EQ(tokenizer.decode(std::vector<TokenId>{0, kHi}), "hi");
}

TEST_F(TokenizerFromGguf, AddBosDefaultsFollowLlamaCpp) {
  EXPECT_EQ(load(tokenizer_file("llama-bpe")).encode("hi"), (std::vector<TokenId>{0, kHi}));
  EXPECT_EQ(load(tokenizer_file("qwen2")).encode("hi"), (std::vector<TokenId>{kHi}));
  GgufWriter writer = tokenizer_file("llama-bpe");
  writer.set_bool("tokenizer.ggml.add_bos_token", false);
  EXPECT_EQ(load(writer).encode("hi"), (std::vector<TokenId>{kHi}));
}

TEST_F(TokenizerFromGguf, AcceptsEveryImplementedPreTokenizer) {
  for (const char* pre : {"smollm", "llama-bpe", "llama3", "llama-v3", "qwen2", "gpt-2"}) {
    EXPECT_EQ(load(tokenizer_file(pre)).vocab_size(), 259u) << pre;
  }
}

TEST_F(TokenizerFromGguf, RefusesUnknownPreTokenizer) {
  expect_refused(tokenizer_file("deepseek-llm"));
}

TEST_F(TokenizerFromGguf, RefusesOtherTokenizerModels) {
  GgufWriter writer = tokenizer_file("smollm");
  writer.set_string("tokenizer.ggml.model", "llama");
  expect_refused(writer);
}

TEST_F(TokenizerFromGguf, RefusesBadIdsAndTypes) {
  GgufWriter bad_eos = tokenizer_file("smollm");
  bad_eos.set_uint32("tokenizer.ggml.eos_token_id", 259);
  expect_refused(bad_eos);

  GgufWriter short_types = tokenizer_file("smollm");
  short_types.set_int32_array("tokenizer.ggml.token_type", {3, 3});
  expect_refused(short_types);

  GgufWriter bad_merge = tokenizer_file("smollm");
  bad_merge.set_string_array("tokenizer.ggml.merges", {"hi"});
  expect_refused(bad_merge);
}

}  // namespace
}  // namespace kvshrink::engine
