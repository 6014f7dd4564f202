// The kvshrink executable under mpirun with bad input: each case must end with one clear error
// line ("kvshrink: error: ..."), a non-zero exit of the job, and no hang (a 120 s timeout).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/compression/head_profile_file.h"
#include "engine/compression/kv_basis_file.h"
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

// A well-formed kv basis for (identity, layers, kv heads, dim): identity bases, zero energies, a zero
// importance predictor.
engine::KvBasis identity_basis(const std::string& identity, int64_t n_layers, int64_t n_kv_heads, int64_t d) {
  engine::KvBasis b;
  b.model = identity;
  b.n_layers = n_layers;
  b.n_kv_heads = n_kv_heads;
  b.head_dim = d;
  b.tokens = 1;
  b.chunk = 1;
  b.text = "cli_errors_test";
  b.joint_dim = n_kv_heads * d;
  auto eye = [](int64_t n, int64_t copies, std::vector<float>& out) {
    for (int64_t c = 0; c < copies; ++c) {
      for (int64_t i = 0; i < n * n; ++i) out.push_back(i % (n + 1) == 0 ? 1.0f : 0.0f);
    }
  };
  eye(d, n_layers * n_kv_heads, b.key_basis);
  eye(d, n_layers * n_kv_heads, b.value_basis);
  eye(b.joint_dim, n_layers, b.joint_key_basis);
  eye(b.joint_dim, n_layers, b.joint_value_basis);
  b.key_energy.assign(static_cast<size_t>(n_layers * n_kv_heads * d), 0.0f);
  b.value_energy = b.key_energy;
  b.joint_key_energy.assign(static_cast<size_t>(n_layers * b.joint_dim), 0.0f);
  b.joint_value_energy = b.joint_key_energy;
  b.importance.assign(static_cast<size_t>(n_layers * n_kv_heads * (2 * d + 1)), 0.0f);
  return b;
}

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
  EXPECT_EQ(result.output.find("MPI_ABORT"), std::string::npos) << "abort banner: " << args << "\n"
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
    // kv bases: one that fits the test model, one for another model with 2 layers
    engine::write_kv_basis(dir_ / "fits.kvbasis.gguf",
                           identity_basis(zero.model, config.n_layers, config.n_head_kv, config.head_dim));
    engine::write_kv_basis(dir_ / "other_model.kvbasis.gguf",
                           identity_basis(other.model, 2, config.n_head_kv, config.head_dim));
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

TEST_F(CliErrorsTest, NonFiniteSampling) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --temperature nan",
                     "--temperature: nan is outside");
  expect_clean_error(2, "generate -m " + model() + " -p hi --top-p nan", "--top-p: nan is outside");
  expect_clean_error(2, "generate -m " + model() + " -p hi --temperature inf",
                     "--temperature: inf is outside");
  expect_clean_error(2, "generate -m " + model() + " -p hi --seed -1", "--seed: -1 is not an integer >= 0");
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

// A KV pool too small for one block, or for the prompt's full KV: one clear line, before or instead
// of any generation. A pool that holds a few sequences at a time: bench-throughput preempts and
// recomputes, and every request still finishes.
TEST_F(CliErrorsTest, TinyKvMemory) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --kv-memory 1KiB", "holds no KV block");
  expect_clean_error(
      2,
      "generate -m " + model() +
          " --kv-memory 700KiB -p 'a prompt long enough that its full KV on one rank needs more "
          "blocks than a pool of well under a megabyte can hold at once, surely'",
      "raise --kv-memory");
  const auto result = run(mpirun_kvshrink(2) + " bench-throughput -m " + model() +
                          " --input-len 24 --output-len 40 --num-prompts 6 --kv-memory 3MiB -o json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto json_start = result.output.find("[\n");  // the JSON array (progress lines come before)
  ASSERT_NE(json_start, std::string::npos) << result.output;
  const auto runs =
      nlohmann::json::parse(result.output.substr(json_start, result.output.rfind(']') - json_start + 1));
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].at("failed"), 0) << runs.dump(2);
  EXPECT_GT(runs[0].at("preemptions").get<int64_t>(), 0) << runs.dump(2);
  EXPECT_EQ(runs[0].at("output_tokens"), 6 * 40) << runs.dump(2);
}

TEST_F(CliErrorsTest, MoreRanksThanKvHeads) {
  expect_clean_error(4, "generate -m " + model() + " -p hi", "kv heads");
}

// --device: an unknown name is a flag error; cuda where it cannot run (a build without it, or no
// device) is one error line on every rank count, before any model work.
TEST_F(CliErrorsTest, UnknownOrUnusableDevice) {
  expect_clean_error(1, "generate -m " + model() + " -p hi --device tpu", "unknown device 'tpu'");
  if (run(std::string(KVSHRINK_BINARY) + " info").output.find("cuda:0") != std::string::npos) return;
  for (int np : {1, 2}) expect_clean_error(np, "generate -m " + model() + " -p hi --device cuda", "CUDA");
}

TEST_F(CliErrorsTest, UnknownKvDtype) {
  expect_clean_error(1, "generate -m " + model() + " -p hi --kv-dtype bf8",
                     "--kv-dtype: unknown KV dtype 'bf8' (this build has: f16, f32)");
  expect_clean_error(2, "generate -m " + model() + " -p hi --kv-dtype q4",
                     "--kv-dtype: KV dtype 'q4': quantized KV segments are not built yet");
}

TEST_F(CliErrorsTest, BudgetOutOfRange) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv --budget 0", "outside (0, 1]");
  expect_clean_error(2, "generate -m " + model() + " -p hi --press snapkv --budget 1.5", "outside (0, 1]");
}

TEST_F(CliErrorsTest, PressParametersOutOfRange) {
  const std::string args = "generate -m " + model() + " -p hi --press snapkv --budget 0.5";
  expect_clean_error(2, args + " --window 2000000000", "--window: Value 2000000000 not in range");
  expect_clean_error(2, args + " --window 10000", "--window 10000 exceeds the model's context of 8192");
  expect_clean_error(2, args + " --alpha nan", "--alpha: nan is outside");
  expect_clean_error(2, args + " --budget nan", "--budget: nan is outside (0, 1]");
}

TEST_F(CliErrorsTest, EvalBudgetBelowTheWindow) {
  expect_clean_error(2,
                     "eval -m " + model() +
                         " -t passkey --context-lengths 512 --depths 50 --press snapkv "
                         "--budget 1e-9 -o " +
                         (dir_ / "eval_budget").string(),
                     "snapkv cannot meet the budget");
}

TEST_F(CliErrorsTest, GenerateBudgetBelowTheWindow) {
  expect_clean_error(2,
                     "generate -m " + model() +
                         " -p 'a prompt that is long enough to have more tokens than the window of four' "
                         "--press snapkv --window 4 --budget 1e-9 -n 4",
                     "snapkv cannot meet the budget");
}

TEST_F(CliErrorsTest, ContextLengthsPastTheModelContext) {
  expect_clean_error(
      2,
      "eval -m " + model() + " -t passkey --context-lengths 1024,20000 -o " + (dir_ / "eval_long").string(),
      "--context-lengths 20000 exceeds the context of 8192 tokens");
  expect_clean_error(2,
                     "eval -m " + model() + " -t passkey --context-lengths 1024 --ctx-size 512 -o " +
                         (dir_ / "eval_long").string(),
                     "--context-lengths 1024 exceeds the context of 512 tokens");
  expect_clean_error(
      2,
      "profile-heads -m " + model() + " --context-lengths 16777216 -o " + (dir_ / "long.heads.gguf").string(),
      "--context-lengths 16777216 exceeds the context of 8192 tokens");
}

TEST_F(CliErrorsTest, OutputPathCheckedBeforeAnyModelWork) {
  const std::string absent = (dir_ / "absent" / "out.gguf").string();
  expect_clean_error(2, "calibrate -m " + model() + " -o " + absent,
                     "the folder '" + (dir_ / "absent").string());
  expect_clean_error(2, "profile-heads -m " + model() + " -o " + absent, "does not exist");
  expect_clean_error(2, "calibrate -m " + model() + " -o " + dir_.string(), "it is a folder");
  expect_clean_error(2, "profile-heads -m " + model() + " -o " + dir_.string(), "it is a folder");
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

TEST_F(CliErrorsTest, KvBasisOfAnotherModel) {
  expect_clean_error(2,
                     "generate -m " + model() + " -p hi --press mixeddimkv --budget 0.5 --kv-basis " +
                         (dir_ / "other_model.kvbasis.gguf").string(),
                     "was made for another model");
}

TEST_F(CliErrorsTest, MissingKvBasis) {
  expect_clean_error(2,
                     "generate -m " + model() + " -p hi --press dynakv --budget 0.5 --kv-basis " +
                         (dir_ / "absent.kvbasis.gguf").string(),
                     "absent.kvbasis.gguf");
}

TEST_F(CliErrorsTest, CandidateRanksMustDivideTheHeadDim) {
  const std::string basis = " --kv-basis " + (dir_ / "fits.kvbasis.gguf").string();
  expect_clean_error(
      2, "generate -m " + model() + " -p hi --press mixeddimkv --budget 0.5 --ranks 64,48" + basis,
      "each candidate rank must divide the head dimension 64");
  expect_clean_error(2, "generate -m " + model() + " -p hi --press dynakv --budget 0.5 --ranks 128" + basis,
                     "each candidate rank must divide the head dimension 64");
  expect_clean_error(2, "generate -m " + model() + " -p hi --press dynakv --budget 0.5 --ranks 8,8" + basis,
                     "given twice");
}

TEST_F(CliErrorsTest, BudgetTheCandidateRanksCannotMeet) {
  // 5% of a 300-token prompt: dynakv holds every token at >= d/8 (13%); mixeddimkv's 32-token
  // window alone is over 10%.
  std::string prompt;
  for (int i = 0; i < 300; ++i) prompt += " hello";
  const std::string args =
      " -p '" + prompt + "' --budget 0.05 -n 2 --kv-basis " + (dir_ / "fits.kvbasis.gguf").string();
  expect_clean_error(2, "generate -m " + model() + " --press dynakv" + args, "dynakv cannot meet the budget");
  expect_clean_error(2, "generate -m " + model() + " --press mixeddimkv" + args,
                     "mixeddimkv cannot meet the budget");
}

TEST_F(CliErrorsTest, JointBasisNeedsEveryHeadOnOneRank) {
  expect_clean_error(2,
                     "generate -m " + model() +
                         " -p hi --press dynakv --joint-basis --budget 0.5 --kv-basis " +
                         (dir_ / "fits.kvbasis.gguf").string(),
                     "needs every kv head of a layer on one rank");
  expect_clean_error(1, "generate -m " + model() + " -p hi --press mixeddimkv --joint-basis --budget 0.5",
                     "--joint-basis is for dynakv");
}

TEST_F(CliErrorsTest, AllocatorDoesNotApplyToMixedDimKv) {
  expect_clean_error(2, "generate -m " + model() + " -p hi --press mixeddimkv --allocator adakv --budget 0.5",
                     "--allocator does not apply to mixeddimkv");
}

TEST_F(CliErrorsTest, HelpListsEveryGenerateFlag) {
  const auto result = run(std::string(KVSHRINK_BINARY) + " generate --help");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* flag : {"--model", "--prompt", "--prompt-file", "--chat", "--max-tokens", "--temperature",
                           "--top-k", "--top-p", "--seed", "--ctx-size", "--batch-size"}) {
    EXPECT_NE(result.output.find(flag), std::string::npos) << flag;
  }
}

// --stop ends the generation at the first match (printed with the text), on every rank.
TEST_F(CliErrorsTest, StopStringEndsTheGeneration) {
  const auto result = run(mpirun_kvshrink(2) + " generate -m " + model() +
                          " --chat -p 'Count from one to ten, separated by commas.' --stop '3. 3' -n 64");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("2. 2"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("4. 4"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("stop: stop string"), std::string::npos) << result.output;
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
