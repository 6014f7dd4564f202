// The kvshrink executable under mpirun with bad input: each case must end with one clear error
// line ("kvshrink: error: ..."), a non-zero exit of the job, and no hang (a 120 s timeout).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "engine/gguf/gguf_writer.h"
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
