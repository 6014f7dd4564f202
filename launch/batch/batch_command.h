// `kvshrink batch -i requests.jsonl -o results.jsonl`: an OpenAI-format batch file (vLLM's
// run_batch) run through the engine's scheduler, every line in flight as memory allows. Each
// record is written and flushed as its line ends; a re-run with the same output skips the lines
// already there (and drops a torn last line). SIGTERM/SIGINT on rank 0 finish the step in
// progress and exit 75 on every rank ("resume with the same command"); 0 once every line has a
// record.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "engine/serving/engine.h"
#include "launch/compression_options.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

// The exit code of a run stopped by a signal before every line had its record (EX_TEMPFAIL):
// examples/slurm requeues the task on it.
inline constexpr int kBatchInterruptedExitCode = 75;

struct BatchOptions {
  engine::EngineOptions engine;
  CompressionOptions compression;  // the default press and budget of every line
  std::string input;
  std::string output;
  std::string served_model_name;    // "" = the GGUF file's stem; a body naming another model is refused
  double progress_interval = 10.0;  // seconds between progress lines when stderr is not a terminal
};

CLI::App* add_batch_command(CLI::App& app, BatchOptions& options);
int run_batch(const BatchOptions& options, comm::Communicator& control, comm::Communicator& data);

}  // namespace kvshrink::launch
