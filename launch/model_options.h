// Command-line options shared by the subcommands that run the model.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/generation/sampler.h"
#include "engine/model/llama_config.h"
#include "kernels/backend_factory.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

// --model (required), --ctx-size, --batch-size, --matmul-activations, --kv-dtype, --device.
void add_model_options(CLI::App& cmd, std::string& model, int64_t& context_size, int64_t& batch_size,
                       kernels::BackendOptions& backend);
// --temperature, --top-k, --top-p, --seed.
void add_sampling_options(CLI::App& cmd, engine::SamplingParams& sampling);
// Collective: --context-lengths past the context (from engine::context_size_or_default) are an error on
// every rank, before any prompt is built.
void check_context_lengths(const std::vector<int64_t>& lengths, int64_t context, comm::Communicator& comm);

}  // namespace kvshrink::launch
