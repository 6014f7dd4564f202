// The default model end to end on the GPU: `kvshrink batch` of 8 prompts, each at full KV and under
// three presses (snapkv, streamingllm, adakv at 25 %), greedy, gives the same text with --device
// cuda as with --device cpu, at np 1 (one rank on the GPU, NCCL data plane) and at np 2 on one GPU
// (both ranks share it: the data plane falls back to MPI, with its notice). Skipped without a
// device, saying so.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_devices.h"
#include "support/run_process.h"
#include "support/test_paths.h"

namespace kvshrink {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// 8 prompts of about 570 tokens each: a story with one fact that differs, then a cue to repeat it.
std::vector<std::string> prompts() {
  const std::vector<std::string> facts{"the key is under the blue mat", "the train leaves at 7:45",
                                       "the password is 48213",         "the cat is named Juniper",
                                       "the meeting moved to Thursday", "the boat is painted red",
                                       "the code for the gate is 9071", "the doctor is Dr. Alvarez"};
  std::string filler;
  for (int i = 0; i < 12; ++i) {
    filler +=
        "The village kept its records in a small stone house by the river, and every spring the "
        "keepers copied them again. ";
  }
  std::vector<std::string> out;
  for (const auto& fact : facts)
    out.push_back(filler + "Remember this: " + fact + ". " + filler + "What was to remember? Remember this:");
  return out;
}

std::string batch_input() {
  std::string text;
  const auto all = prompts();
  for (size_t p = 0; p < all.size(); ++p) {
    for (const std::string press : {"none", "snapkv", "streamingllm", "adakv"}) {
      json body{{"prompt", all[p]}, {"max_tokens", 24}, {"temperature", 0}, {"kv_press", press}};
      if (press != "none") body["kv_budget"] = 0.25;
      text += json{{"custom_id", press + "-" + std::to_string(p)},
                   {"method", "POST"},
                   {"url", "/v1/completions"},
                   {"body", body}}
                  .dump() +
              "\n";
    }
  }
  return text;
}

// custom_id -> generated text of a results file
std::map<std::string, std::string> texts(const fs::path& results) {
  std::map<std::string, std::string> out;
  std::ifstream in(results);
  for (std::string line; std::getline(in, line);) {
    const auto record = json::parse(line);
    out[record["custom_id"].get<std::string>()] =
        record["response"]["body"]["choices"][0]["text"].get<std::string>();
  }
  return out;
}

class CudaGenerateTest : public ::testing::TestWithParam<int> {};

TEST_P(CudaGenerateTest, GreedyTextEqualsTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  const int np = GetParam();
  const fs::path dir = fs::temp_directory_path() / ("kvshrink_cuda_generate_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "in.jsonl") << batch_input();
  std::map<std::string, std::map<std::string, std::string>> by_device;
  for (const std::string device : {"cpu", "cuda"}) {
    const fs::path out = dir / (device + ".jsonl");
    fs::remove(out);
    const auto run = testing::run_command(testing::mpirun_kvshrink(np) + " batch -m " +
                                              testing::model_path() + " -c 2048 --device " + device + " -i " +
                                              (dir / "in.jsonl").string() + " -o " + out.string(),
                                          600);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    if (device == "cuda" && np > 1) {
      EXPECT_NE(run.output.find("share"), std::string::npos) << run.output;
    }
    by_device[device] = texts(out);
  }
  fs::remove_all(dir);
  ASSERT_EQ(by_device["cpu"].size(), 32u);
  for (const auto& [id, text] : by_device["cpu"]) EXPECT_EQ(by_device["cuda"][id], text) << id;
}

INSTANTIATE_TEST_SUITE_P(Ranks, CudaGenerateTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace kvshrink
