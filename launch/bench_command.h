// `kvshrink bench`: llama-bench-like throughput tests. ppN = prefill of N tokens, tgN = N decode
// steps one token at a time; "@ dD" = after a context of D tokens (not timed). Random token ids,
// repeated --repetitions times; mean ± standard deviation of tokens/s, plus peak RSS per rank.
// With --press/--budget, every test also runs with each press x budget: the depth context is
// compressed before the timed part, and the table shows the KV held and the attention time. Runs
// on the engine's scheduler, one sequence at a time: the depth context is one request's prefill
// and every timed run a fork of it.
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

struct BenchOptions {
  engine::EngineOptions engine;  // model, context, rows per step (prefill chunk), KV pool
  std::vector<int64_t> prompt_sizes = {512, 2048};
  std::vector<int64_t> generate_sizes = {128};
  std::vector<int64_t> depths = {0};
  int repetitions = 3;
  std::string output = "md";  // md | json
  uint64_t seed = 1234;
  CompressionOptions compression;  // each press x budget is benchmarked after full KV
};

CLI::App* add_bench_command(CLI::App& app, BenchOptions& options);
int run_bench(const BenchOptions& options, comm::Communicator& comm, comm::Communicator& data);

}  // namespace kvshrink::launch
