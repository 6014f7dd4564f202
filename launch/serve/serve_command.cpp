#include "launch/serve/serve_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <optional>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "launch/api_settings.h"
#include "launch/engine_options.h"

namespace kvshrink::launch {

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  auto* cmd =
      app.add_subcommand("serve", "Serve the OpenAI API over HTTP (rank 0) on the engine (run under mpirun)");
  add_engine_options(*cmd, o.engine);
  add_compression_options(*cmd, o.compression, /*several=*/false);
  cmd->add_option("--host", o.http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o.http.port, "Port to listen on (0: any free port, printed)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o.http.api_key,
                  "Clients must send 'Authorization: Bearer KEY' (all endpoints but /health)")
      ->envname("KVSHRINK_API_KEY");
  cmd->add_option("--served-model-name", o.served_model_name,
                  "The model name clients use (default: the GGUF's stem)");
  cmd->add_option("--max-body-bytes", o.http.max_body_bytes, "Largest request body (larger: 413), e.g. 8MiB")
      ->transform(CLI::AsSizeValue(true))
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{64}, uint64_t{1} << 34));
  cmd->add_option("--max-connections", o.http.max_connections, "Most open connections (more: 503)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--max-waiting", o.max_waiting,
                  "Most requests queued for admission (more: 429 with Retry-After)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--max-prompt-tokens", o.max_prompt_tokens, "Longest prompt in tokens (0: the context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens-limit", o.max_tokens_limit,
                  "Largest max_tokens a request may ask for (0: the context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option(
         "--health-stall-seconds", o.http.stall_seconds,
         "/health answers 503 while one engine step has run longer than this (a rank stopped or gone)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--shutdown-timeout", o.http.shutdown_timeout,
                  "Seconds running requests get to finish after SIGTERM/SIGINT")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  return cmd;
}

int run_serve(const ServeOptions& options, comm::Communicator& control, comm::Communicator& data) {
  const bool coordinator = control.world().is_coordinator();
  const auto default_spec = compression_specs(options.compression, control).front();
  // Rank 0 handles the signals (drain, then end the run everywhere); the others keep following it.
  if (!coordinator) {
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGUSR1, SIG_IGN);
  }
  engine::RequestInbox inbox(options.max_waiting);
  std::optional<HttpServer> server;
  std::string error;
  if (coordinator) {
    try {
      server.emplace(options.http, inbox);
      server->start();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(control, error.empty(), error);
  if (coordinator) {
    std::fprintf(
        stderr, "kvshrink: loading %s; http://%s:%d/health answers 503 until it is ready (rank 0 pid %d)\n",
        options.engine.model.c_str(), options.http.host.c_str(), server->port(), static_cast<int>(getpid()));
  }
  engine::Engine engine(options.engine, control, data);
  if (coordinator) {
    ApiSettings settings = api_settings(engine, options.engine.model, options.served_model_name,
                                        options.compression, default_spec);
    settings.max_prompt_tokens = options.max_prompt_tokens;
    settings.max_tokens_limit = options.max_tokens_limit;
    std::fprintf(
        stderr,
        "kvshrink: serving '%s' (%s by default) on http://%s:%d (%d rank(s), KV pool %.0f MiB per rank)\n",
        settings.model_name.c_str(), default_spec.label().c_str(), options.http.host.c_str(), server->port(),
        control.world().size, engine.pool().capacity() / 1048576.0);
    server->set_ready(engine.tokenizer(), std::move(settings));
  }
  engine.serve(coordinator ? &inbox : nullptr);
  if (coordinator) {
    server->stop();
    std::fprintf(stderr, "kvshrink: served; exiting\n");
  }
  return 0;
}

}  // namespace kvshrink::launch
