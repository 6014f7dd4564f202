// Needle probes (engine/profiling/needle_probe.h): the probe set's order, tasks, seeds and labels,
// and a probe's prompt / answer split and needle tokens on a byte-level tokenizer.
#include "engine/profiling/needle_probe.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/chat_template.h"

namespace kvshrink::engine {
namespace {

TEST(NeedleRequests, LengthThenDepthThenSample) {
  const auto requests =
      needle_requests({.context_lengths = {256, 512}, .depths = {10, 90}, .samples = 3, .seed = 2});
  ASSERT_EQ(requests.size(), 12u);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].context_length, i < 6 ? 256 : 512) << i;
    EXPECT_EQ(requests[i].depth_percent, (i / 3) % 2 == 0 ? 10.0 : 90.0) << i;
    EXPECT_STREQ(requests[i].task, kNeedleProbeTasks[(i % 3) % 2]) << i;
    EXPECT_EQ(requests[i].seed, 2u * 1000003u + i) << i;
  }
  EXPECT_EQ(requests[4].label(), "niah_multikey_1 len 256 depth 90");
  EXPECT_EQ(needle_requests({.context_lengths = {256}, .depths = {}, .samples = 2, .seed = 0}).size(), 0u);
}

// ChatML's two specials, then one token per byte: every text encodes byte by byte.
class NeedleProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> tokens = {"<|im_start|>", "<|im_end|>"};
    std::vector<int32_t> types = {3, 3};
    for (int byte = 0; byte < 256; ++byte) {
      tokens.push_back(encode_byte_level(std::string(1, static_cast<char>(byte))));
      types.push_back(1);
    }
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "gpt2");
    writer.set_string("tokenizer.ggml.pre", "smollm");
    writer.set_string_array("tokenizer.ggml.tokens", tokens);
    writer.set_int32_array("tokenizer.ggml.token_type", types);
    writer.set_string_array("tokenizer.ggml.merges", {"q z"});
    writer.set_uint32("tokenizer.ggml.bos_token_id", 0);
    writer.set_uint32("tokenizer.ggml.eos_token_id", 1);
    writer.write(path_);
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(path_)));
  }
  void TearDown() override { std::filesystem::remove(path_); }

  std::string render(std::span<const TokenId> ids) const {
    std::string text;
    for (const TokenId id : ids) text += tokenizer_->token_bytes(id, /*render_special=*/true);
    return text;
  }

  std::filesystem::path path_ = std::filesystem::temp_directory_path() /
                                ("kvshrink_needle_probe_test_" + std::to_string(::getpid()) + ".gguf");
  std::unique_ptr<Tokenizer> tokenizer_;
};

const std::string kNeedle = "One of the special magic numbers for apple is: 4242.";

TEST_F(NeedleProbeTest, SplitsPromptAndAnswerAndFindsTheNeedle) {
  const NeedleRequest request{.task = "niah_single_2", .context_length = 64, .depth_percent = 50, .seed = 1};
  const NeedleText text{
      .user = "Hay hay. " + kNeedle + " More hay.\nWhat is the special magic number for apple?",
      .answer_prefix = " The special magic number for apple is",
      .value = "4242"};
  const auto probe = make_needle_probe(request, text, *tokenizer_);
  EXPECT_EQ(render(probe.prompt), render_chatml({{"user", text.user}}) + text.answer_prefix);
  EXPECT_EQ(render(probe.answer), " 4242");
  const auto needle = std::span<const TokenId>(probe.prompt)
                          .subspan(static_cast<size_t>(probe.needle[0]),
                                   static_cast<size_t>(probe.needle[1] - probe.needle[0]));
  EXPECT_EQ(render(needle), kNeedle);
  EXPECT_EQ(probe.label, "niah_single_2 len 64 depth 50");
}

TEST_F(NeedleProbeTest, RefusesAPromptWithoutTheNeedle) {
  const NeedleRequest request{.task = "niah_single_2", .context_length = 64, .depth_percent = 50, .seed = 1};
  const NeedleText text{.user = "Only hay here.", .answer_prefix = " The answer is", .value = "4242"};
  EXPECT_THROW(make_needle_probe(request, text, *tokenizer_), std::runtime_error);
}

TEST_F(NeedleProbeTest, BuildsOneProbePerRequest) {
  std::vector<std::string> tasks;
  const auto probes = build_needle_probes(
      {.context_lengths = {64}, .depths = {10, 90}, .samples = 2, .seed = 0},
      [&](const NeedleRequest& request) {
        tasks.emplace_back(request.task);
        return NeedleText{.user = "Hay. " + kNeedle, .answer_prefix = " It is", .value = "4242"};
      },
      *tokenizer_);
  ASSERT_EQ(probes.size(), 4u);
  EXPECT_EQ(tasks, (std::vector<std::string>{"niah_single_2", "niah_multikey_1", "niah_single_2",
                                             "niah_multikey_1"}));
  EXPECT_EQ(probes[3].label, "niah_multikey_1 len 64 depth 90");
}

}  // namespace
}  // namespace kvshrink::engine
