// `kvshrink bench-throughput` (after `vllm bench throughput`): N requests at once through the
// scheduler, from synthetic lengths (random token ids) or a JSONL of prompts, under one KV memory
// cap, for full KV and each press x budget. Prints requests/s, output and total tokens/s, mean and
// peak running sequences, the KV pool's peak, TTFT and TPOT p50/p99, as markdown or JSON; a
// progress line on stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "engine/serving/engine.h"
#include "launch/compression_options.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct BenchThroughputOptions {
  engine::EngineOptions engine;
  int64_t input_len = 1024;
  int64_t output_len = 128;
  int64_t num_prompts = 16;
  std::string dataset;        // JSONL, one {"prompt": text[, "max_tokens": n]} per line; "" = synthetic
  std::string output = "md";  // md | json
  uint64_t seed = 0;
  bool skip_full_kv = false;
  CompressionOptions compression;
};

CLI::App* add_bench_throughput_command(CLI::App& app, BenchThroughputOptions& options);
int run_bench_throughput(const BenchThroughputOptions& options, comm::Communicator& control,
                         comm::Communicator& data);

}  // namespace kvshrink::launch
