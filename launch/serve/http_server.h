// `kvshrink serve`'s HTTP/1.1 front end on Boost.Asio/Beast (rank 0): the OpenAI API
// (POST /v1/completions, /v1/chat/completions, GET /v1/models), GET /health and GET /metrics,
// feeding the engine through a RequestInbox. One I/O thread runs every connection as a C++20
// coroutine; the engine thread hands tokens back to it (engine thread -> post -> connection).
//
//   HttpServer server(config, inbox);
//   server.start();                        // listening; /health answers 503 while loading
//   server.set_ready(tokenizer, settings);  // the engine is loaded
//   engine.serve(&inbox);                  // until SIGTERM/SIGINT closes the inbox and it drains
//   server.stop();
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "engine/serving/request_inbox.h"
#include "engine/tokenizer/tokenizer.h"
#include "launch/openai/completion_request.h"

namespace kvshrink::launch {

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;                    // 0 = any free port (see HttpServer::port)
  std::string api_key;                // "" = no key; else `Authorization: Bearer KEY` on all but /health
  uint64_t max_body_bytes = 8 << 20;  // larger bodies get 413
  int64_t max_connections = 512;      // more get 503 and are closed
  double shutdown_timeout = 30.0;     // seconds running requests get after SIGTERM/SIGINT
  double read_timeout = 60.0;         // seconds to receive a request's header and body
  double stall_seconds = 10.0;        // /health answers 503 while one engine step takes longer
};

class HttpServer {
 public:
  HttpServer(const HttpServerConfig& config, engine::RequestInbox& inbox);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws std::runtime_error naming the address), handles SIGTERM and SIGINT
  // from now on (stop accepting, close the inbox, abandon what still runs after the shutdown
  // timeout), and starts the I/O thread.
  void start();
  int port() const;  // the port bound
  // The engine is loaded: completions are accepted from now on.
  void set_ready(const engine::Tokenizer& tokenizer, ApiSettings settings);
  // After engine.serve() returned: waits (a few seconds at most) for the last responses to be
  // written, then stops the I/O thread.
  void stop();

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::thread io_thread_;
};

}  // namespace kvshrink::launch
