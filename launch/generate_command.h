// `kvshrink generate`: one prompt in, generated text streamed to stdout by rank 0, timings and
// memory to stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/generation/sampler.h"
#include "engine/serving/engine.h"
#include "launch/compression_options.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct GenerateOptions {
  engine::EngineOptions engine;
  std::string prompt;
  std::string prompt_file;
  bool chat = false;
  int64_t max_tokens = 128;
  std::vector<std::string> stop;  // stop strings
  engine::SamplingParams sampling;
  bool show_stats = true;
  CompressionOptions compression;
};

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& options);
int run_generate(const GenerateOptions& options, comm::Communicator& comm, comm::Communicator& data);

}  // namespace kvshrink::launch
