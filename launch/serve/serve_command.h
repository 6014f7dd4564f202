// `kvshrink serve`: an OpenAI-compatible HTTP server on rank 0 (http_server.h) over the engine's
// scheduler; the other ranks follow the step protocol. SIGTERM/SIGINT drain and exit 0 everywhere.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "engine/serving/engine.h"
#include "launch/compression_options.h"
#include "launch/serve/http_server.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct ServeOptions {
  engine::EngineOptions engine;
  CompressionOptions compression;  // the default press and budget of every request
  HttpServerConfig http;
  std::string served_model_name;  // "" = the GGUF file's stem
  int64_t max_waiting = 1024;     // requests queued beyond this get 429
  int64_t max_prompt_tokens = 0;  // 0 = the context
  int64_t max_tokens_limit = 0;   // 0 = the context
};

CLI::App* add_serve_command(CLI::App& app, ServeOptions& options);
int run_serve(const ServeOptions& options, comm::Communicator& control, comm::Communicator& data);

}  // namespace kvshrink::launch
