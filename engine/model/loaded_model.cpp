#include "engine/model/loaded_model.h"

#include <fmt/format.h>

#include <chrono>
#include <string>

#include "comm/collective_error.h"
#include "engine/compression/head_profile_file.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/backend_factory.h"

namespace kvshrink::engine {

LoadedModel load_model(const std::string& path, comm::Communicator& comm, int64_t max_batch,
                       const kernels::BackendOptions& backend) {
  const auto start = std::chrono::steady_clock::now();
  LoadedModel loaded;
  std::string error;
  try {
    // The mapping is dropped at the end of this scope: each rank keeps only its own shard.
    const auto file = GgufFile::open(path);
    auto options = backend;
    options.node_local_rank = comm.world().local_rank;
    loaded.backend = kernels::make_backend(options);
    loaded.model = std::make_unique<LlamaModel>(file, comm, *loaded.backend, max_batch,
                                                options.kv_dtype);  // checks arch first
    loaded.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_gguf(file));
    loaded.path = path;
    loaded.identity = model_identity(file, loaded.model->config());
    const auto vocab = static_cast<size_t>(loaded.model->config().vocab_size);
    if (loaded.tokenizer->vocab_size() > vocab) {
      throw GgufError(fmt::format("{}: the tokenizer has {} tokens but token_embd.weight only {} rows", path,
                                  loaded.tokenizer->vocab_size(), vocab));
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  comm::check_all(comm, error.empty(), error);
  loaded.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return loaded;
}

int64_t context_size_or_default(int64_t requested, const LlamaConfig& config, comm::Communicator& comm) {
  comm::check_all(comm, requested <= config.n_ctx_train,
                  fmt::format("--ctx-size {} exceeds the model's trained context of {} tokens", requested,
                              config.n_ctx_train));
  return requested == 0 ? config.n_ctx_train : requested;
}

}  // namespace kvshrink::engine
