// What the HTTP server's connections share (http_server.cpp, completion_exchange.cpp).
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <string>

#include "engine/serving/request_inbox.h"
#include "engine/tokenizer/tokenizer.h"
#include "launch/openai/api_error.h"
#include "launch/openai/completion_request.h"
#include "launch/serve/http_server.h"
#include "launch/serve/serve_metrics.h"

namespace kvshrink::launch {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using HttpRequest = http::request<http::string_body>;

struct HttpServer::State {
  State(const HttpServerConfig& config, engine::RequestInbox& inbox) : config(config), inbox(inbox) {}
  HttpServerConfig config;
  engine::RequestInbox& inbox;
  net::io_context io{1};
  tcp::acceptor acceptor{io};
  net::signal_set signals{io};
  net::steady_timer shutdown_deadline{io};
  ServeMetrics metrics;
  // Written once before `ready` is set (release), read after it is seen (acquire).
  const engine::Tokenizer* tokenizer = nullptr;
  ApiSettings settings;
  std::atomic<bool> ready{false};
  std::atomic<bool> shutting_down{false};  // SIGTERM/SIGINT: no new requests
  std::atomic<bool> abandon{false};        // the shutdown timeout passed: running requests are cancelled
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> in_flight{0};  // completions submitted whose response is not written yet
};

// A JSON response (errors too) with the status; keep_alive as the request asked.
http::response<http::string_body> json_response(const HttpRequest& request, http::status status,
                                                const std::string& body);
http::response<http::string_body> error_response(const HttpRequest& request, const ApiError& error);

// POST /v1/completions or /v1/chat/completions: parses, submits to the engine, answers (a JSON
// body, or server-sent events when streaming). Returns whether the connection may be kept.
net::awaitable<bool> run_completion(HttpServer::State& state, beast::tcp_stream& stream,
                                    const HttpRequest& request, Endpoint endpoint);

}  // namespace kvshrink::launch
