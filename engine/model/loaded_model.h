// What every subcommand that runs the model needs: the tokenizer, a compute backend and this
// rank's shard of the model, loaded the same way on every rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "kernels/backend_factory.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

struct LoadedModel {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<kernels::Backend> backend;  // kernels::make_backend(options)
  std::unique_ptr<LlamaModel> model;
  std::string path;      // the GGUF file
  std::string identity;  // engine::model_identity(): what side files (head profiles) must match
  double load_seconds = 0.0;
};

// Collective: every rank opens the GGUF and loads its shard onto a backend for backend.device (a
// CUDA rank on its node-local rank's GPU). A failure on any rank (bad file, not a llama model, too
// many ranks for the heads, unknown or unusable device) becomes the same comm::JobError on every rank.
LoadedModel load_model(const std::string& path, comm::Communicator& comm, int64_t max_batch,
                       const kernels::BackendOptions& backend = {});

// Collective: the context to use: the requested size, or the model's trained context when 0. A
// request above the trained context is an error on every rank.
int64_t context_size_or_default(int64_t requested, const LlamaConfig& config, comm::Communicator& comm);

}  // namespace kvshrink::engine
