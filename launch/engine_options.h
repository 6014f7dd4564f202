// Command-line options of the commands that run on the engine's scheduler (generate,
// bench-throughput): the model options plus the scheduler's and the KV pool's limits.
#pragma once

#include <CLI/CLI.hpp>

#include "engine/serving/engine.h"

namespace kvshrink::launch {

// --model, --ctx-size, --batch-size (= --max-num-batched-tokens), --max-num-seqs, --kv-memory.
void add_engine_options(CLI::App& cmd, engine::EngineOptions& options);

}  // namespace kvshrink::launch
