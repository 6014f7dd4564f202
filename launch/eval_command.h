// `kvshrink eval`: long-context tasks on the real model under mpirun, with per-sample JSONL,
// summary.json and a markdown table written by rank 0 to --out. Every sample is prefilled once per
// mode on the engine's scheduler; each press x budget is a fork of that prefill (its own
// compressed copy) and all of them decode together beside full KV. Re-running with the same --out
// skips the (sample, mode, press) records that samples.jsonl already holds.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/serving/engine.h"
#include "launch/compression_options.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct EvalOptions {
  engine::EngineOptions engine;    // model, context, rows per step, KV pool
  std::vector<std::string> tasks;  // synthetic task names, or longbench/<dataset>
  std::vector<int64_t> context_lengths = {1024, 2048, 4096, 8192};
  std::vector<double> depths = {0, 25, 50, 75, 100};
  int samples = 1;  // per (task, length, depth)
  uint64_t seed = 0;
  std::string mode = "query-aware";  // query-aware | query-agnostic | both
  int64_t max_new_tokens = 0;        // cap on answer tokens; 0 = the task's own
  std::string longbench_dir;
  std::string out;
  CompressionOptions compression;  // presses x budgets; full KV is always run beside them
};

CLI::App* add_eval_command(CLI::App& app, EvalOptions& options);
int run_eval(const EvalOptions& options, comm::Communicator& comm, comm::Communicator& data);

}  // namespace kvshrink::launch
