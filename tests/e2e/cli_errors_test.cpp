// The kvshrink executable under mpirun with bad input: each case must end with one clear error
// line ("kvshrink: error: ..."), a non-zero exit of the job, and no hang (a 120 s timeout).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "engine/compression/head_profile_file.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model/llama_config.h"
#include "support/run_process.h"
#include "support/test_paths.h"

namespace kvshrink {
namespace {

using testing::count_occurrences;
using testing::mpirun_kvshrink;
using testing::RunResult;

RunResult run(const std::string& command) {
  return testing::run_command(command, 120);
}

// Runs `args` on np ranks and expects one error line containing `expected`.
void expect_clean_error(int np, const std::string& args, const std::string& expected) {
  const auto result = run(mpirun_kvshrink(np) + " " + args);
  EXPECT_NE(result.exit_code, 0) << args << "\n" << result.output;
  EXPECT_NE(result.exit_code, 124) << "timed out (hang): " << args;
  EXPECT_EQ(count_occurrences(result.output, "kvshrink: error:"), 1u) << args << "\n" << result.output;
  EXPECT_NE(result.output.find(expected), std::string::npos) << "expected '" << expected << "' in:\n"
                                                             << result.output;
}

class CliErrorsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("kvshrink_cli_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    engine::GgufWriter gpt2;
    gpt2.set_string("general.architecture", "gpt2");
    gpt2.write(dir_ / "gpt2.gguf");
    engine::GgufWriter no_arch;
    no_arch.set_uint32("general.alignment_hint", 1);
    no_arch.write(dir_ / "no_arch.gguf");
    FILE* text = std::fopen((dir_ / "not_gguf.gguf").c_str(), "w");
    std::fputs("this is not a GGUF file at all", text);
    std::fclose(text);
    // A head profile made for another model: another identity and 2 layers x 3 kv heads.
    engine::HeadProfile other;
    other.model = "another model | layers 2 heads 9/3 dim 576 ffn 1536 vocab 49152";
    other.method = "test";
    other.probes = 1;
    other.n_layers = 2;
    other.n_kv_heads = 3;
    other.importance = {1, 2, 3, 4, 5, 6};
    engine::write_head_profile(dir_ / "other_model.heads.gguf", other);
    // A profile that fits the test model but scores every head zero.
    const auto file = engine::GgufFile::open(model());
    const auto config = engine::LlamaConfig::from_gguf(file);
    engine::HeadProfile zero = other;
    zero.model = engine::model_identity(file, config);
    zero.n_layers = config.n_layers;
    zero.n_kv_heads = config.n_head_kv;
    zero.importance.assign(static_cast<size_t>(config.n_layers * config.n_head_kv), 0.0);
    engine::write_head_profile(dir_ / "zero.heads.gguf", zero);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static std::string model() { return testing::model_path(); }
  static inline std::filesystem::path dir_;
};

TEST_F(CliErrorsTest, UnknownFlag) {
  expect_clean_error(2, "generate --bogus-flag", "--bogus-flag");
}

TEST_F(CliErrorsTest, MissingModelFlag) {
  expect_clean_error(2, "generate -p hi", "--model");
}

TEST_F(CliErrorsTest, MissingPrompt) {
  expect_clean_error(2, "generate -m " + model(), "--prompt");
}

TEST_F(CliErrorsTest, NoSubcommand) {
  expect_clean_error(2, "", "subcommand");
}

TEST_F(CliErrorsTest, OutOfRangeSampling) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --top-p 0", "top-p");
  expect_clean_error(2, "generate -m " + model() + " -p hi --temperature -1", "temperature");
  expect_clean_error(2, "generate -m " + model() + " -p hi --max-tokens 0", "max-tokens");
}

TEST_F(CliErrorsTest, MissingModelFile) {
  expect_clean_error(2, "generate -m " + (dir_ / "absent.gguf").string() + " -p hi", "absent.gguf");
}

TEST_F(CliErrorsTest, NotAGgufFile) {
  expect_clean_error(2, "generate -m " + (dir_ / "not_gguf.gguf").string() + " -p hi", "not_gguf.gguf");
}

TEST_F(CliErrorsTest, NonLlamaModel) {
  expect_clean_error(2, "generate -m " + (dir_ / "gpt2.gguf").string() + " -p hi",
                     "unsupported architecture 'gpt2'");
  expect_clean_error(2, "generate -m " + (dir_ / "no_arch.gguf").string() + " -p hi", "general.architecture");
}

TEST_F(CliErrorsTest, MissingPromptFile) {
  expect_clean_error(2, "generate -m " + model() + " -f " + (dir_ / "absent.txt").string(), "absent.txt");
}

TEST_F(CliErrorsTest, PromptLongerThanContext) {
  expect_clean_error(
      2, "generate -m " + model() + " --ctx-size 8 -p 'one two three four five six seven eight nine ten'",
      "but the context holds 8");
  expect_clean_error(2, "generate -m " + model() + " --ctx-size 100000 -p hi",
                     "exceeds the model's trained context");
}

TEST_F(CliErrorsTest, MoreRanksThanKvHeads) {
  expect_clean_error(4, "generate -m " + model() + " -p hi", "kv heads");
}

TEST_F(CliErrorsTest, BudgetOutOfRange) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv --budget 0", "outside (0, 1]");
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv --budget 1.5", "outside (0, 1]");
}

TEST_F(CliErrorsTest, TokenBudgetBelowWindow) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv --budget-tokens 16",
                     "below the observation window snapkv always keeps (32)");
}

TEST_F(CliErrorsTest, UnknownPress) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press nosuchpress --budget 0.5", "nosuchpress");
}

TEST_F(CliErrorsTest, PressWithoutBudget) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv", "needs a budget");
}

TEST_F(CliErrorsTest, HeadProfileOfAnotherModel) {
  expect_clean_error(2,
                     "generate -m " + model() + " -p hi --press headkv --budget 0.3 --head-profile " +
                         (dir_ / "other_model.heads.gguf").string(),
                     "was made for another model");
}

TEST_F(CliErrorsTest, AllZeroHeadProfile) {
  expect_clean_error(2,
                     "generate -m " + model() + " -p hi --press headkv --budget 0.3 --head-profile " +
                         (dir_ / "zero.heads.gguf").string(),
                     "is all zero");
}

TEST_F(CliErrorsTest, MissingHeadProfile) {
  expect_clean_error(2,
                     "generate -m " + model() + " -p hi --press headkv --budget 0.3 --head-profile " +
                         (dir_ / "absent.heads.gguf").string(),
                     "absent.heads.gguf");
}

TEST_F(CliErrorsTest, HelpListsEveryGenerateFlag) {
  const auto result = run(std::string(KVSHRINK_BINARY) + " generate --help");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* flag : {"--model", "--prompt", "--prompt-file", "--chat", "--max-tokens", "--temperature",
                           "--top-k", "--top-p", "--seed", "--ctx-size", "--batch-size"}) {
    EXPECT_NE(result.output.find(flag), std::string::npos) << flag;
  }
}

TEST_F(CliErrorsTest, GoodRunPrintsTextAndSpeedOnRankZeroOnly) {
  const auto result = run(mpirun_kvshrink(2) + " generate -m " + model() +
                          " --chat -p 'What is the capital of France?' -n 12");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("Paris"), std::string::npos) << result.output;
  EXPECT_EQ(count_occurrences(result.output, "tokens/s"), 2u)
      << result.output;  // prompt and generation lines, once each
}

}  // namespace
}  // namespace kvshrink
