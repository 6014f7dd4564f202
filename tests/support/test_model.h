// Shared by the end-to-end tests: MPI (as a single rank), the default model loaded once per test
// process, and the golden files (paths: support/test_paths.h). A missing model or golden file is a
// test failure with a clear message, never a skip.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/cpu/cpu_backend.h"
#include "support/test_paths.h"

namespace kvshrink::testing {

inline nlohmann::json read_golden(const std::string& file_name) {
  const std::string path = golden_path(file_name);
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read golden file " + path);
  return nlohmann::json::parse(in);
}

inline comm::Communicator& test_communicator() {
  static int argc = 0;
  static char** argv = nullptr;
  static auto communicator = comm::make_mpi_communicator(&argc, &argv);
  return *communicator;
}

struct TestModel {
  std::unique_ptr<engine::Tokenizer> tokenizer;
  kernels::cpu::CpuBackend backend;
  std::unique_ptr<engine::LlamaModel> model;
};

// The default model, this rank's shard of it for `comm`, its KV stores of kv_dtype; throws if the
// file is missing.
inline std::unique_ptr<TestModel> load_test_model(comm::Communicator& comm,
                                                  kernels::KvDtype kv_dtype = kernels::KvDtype::kF16) {
  auto m = std::make_unique<TestModel>();
  const auto file = engine::GgufFile::open(model_path());
  m->tokenizer = std::make_unique<engine::Tokenizer>(engine::Tokenizer::from_gguf(file));
  m->model = std::make_unique<engine::LlamaModel>(file, comm, m->backend, 512, kv_dtype);
  return m;
}

// The default model on one rank (16-bit KV, the engine's default), loaded once per test process.
inline TestModel& default_model() {
  static std::unique_ptr<TestModel> loaded = load_test_model(test_communicator());
  return *loaded;
}

// The same with f32 KV, for the checks of exact arithmetic: rounding K/V to f16 is discontinuous
// (a change of 1e-7 in a key can move its half by one unit, 1e-3 relative), so two summation
// orders that f32 KV keeps within 1e-4 of each other can differ by ~1e-2 in the logits with f16 KV.
inline TestModel& f32_kv_model() {
  static std::unique_ptr<TestModel> loaded = load_test_model(test_communicator(), kernels::KvDtype::kF32);
  return *loaded;
}

// max |a[i] - b[i]| over two logit arrays of the same size.
inline float max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

}  // namespace kvshrink::testing
