#include "launch/loaded_model.h"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <string>

#include "comm/collective_error.h"
#include "engine/compression/head_profile_file.h"
#include "engine/gguf/gguf_file.h"

namespace kvshrink::launch {

LoadedModel load_model(const std::string& path, comm::Communicator& comm, int64_t max_batch) {
  const auto start = std::chrono::steady_clock::now();
  LoadedModel loaded;
  std::string error;
  try {
    // The mapping is dropped at the end of this scope: each rank keeps only its own shard.
    const auto file = engine::GgufFile::open(path);
    loaded.backend = std::make_unique<kernels::cpu::CpuBackend>();
    loaded.model =
        std::make_unique<engine::LlamaModel>(file, comm, *loaded.backend, max_batch);  // checks arch first
    loaded.tokenizer = std::make_unique<engine::Tokenizer>(engine::Tokenizer::from_gguf(file));
    loaded.path = path;
    loaded.identity = engine::model_identity(file, loaded.model->config());
    const auto vocab = static_cast<size_t>(loaded.model->config().vocab_size);
    if (loaded.tokenizer->vocab_size() > vocab) {
      throw engine::GgufError(
          fmt::format("{}: the tokenizer has {} tokens but token_embd.weight only {} rows", path,
                      loaded.tokenizer->vocab_size(), vocab));
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  comm::check_all(comm, error.empty(), error);
  loaded.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return loaded;
}

uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmHWM:   1234 kB"
  }
  return 0;
}

}  // namespace kvshrink::launch
