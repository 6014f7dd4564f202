#include "launch/serve/http_server.h"

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "launch/openai/api_key.h"
#include "launch/serve/server_state.h"

namespace kvshrink::launch {
namespace {

http::response<http::string_body> text_response(const HttpRequest& request, http::status status,
                                                const std::string& body, const char* content_type) {
  http::response<http::string_body> response{status, request.version()};
  response.set(http::field::server, "kvshrink");
  response.set(http::field::content_type, content_type);
  response.keep_alive(request.keep_alive());
  response.body() = body;
  response.prepare_payload();
  return response;
}

// GET /v1/models: the one model this server runs.
std::string models_body(const HttpServer::State& state) {
  const auto created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  nlohmann::json model = {{"id", state.settings.model_name},
                          {"object", "model"},
                          {"created", created},
                          {"owned_by", "kvshrink"},
                          {"max_model_len", state.settings.context_size}};
  return nlohmann::json{{"object", "list"}, {"data", nlohmann::json::array({model})}}.dump();
}

// The request's path, without the query.
std::string_view request_path(const HttpRequest& request) {
  const auto target = std::string_view(request.target().data(), request.target().size());
  return target.substr(0, target.find('?'));
}

// Everything but the completions. nullopt: not one of these paths.
std::optional<http::response<http::string_body>> simple_route(HttpServer::State& state,
                                                              const HttpRequest& request) {
  const std::string_view path = request_path(request);
  const bool ready = state.ready.load(std::memory_order_acquire);
  if (path == "/health") {
    if (state.shutting_down)
      return json_response(request, http::status::service_unavailable, R"({"status":"shutting down"})");
    if (const double stalled = state.inbox.seconds_in_step(); stalled > state.config.stall_seconds) {
      const nlohmann::json body = {
          {"status",
           fmt::format("stalled: the engine's step has waited {:.0f} s for the ranks (one may be stopped or "
                       "gone; the job ends once KVSHRINK_COMM_TIMEOUT passes)",
                       stalled)}};
      return json_response(request, http::status::service_unavailable, body.dump());
    }
    return ready ? json_response(request, http::status::ok, R"({"status":"ok"})")
                 : json_response(request, http::status::service_unavailable, R"({"status":"loading"})");
  }
  const auto authorization = request[http::field::authorization];
  if (!api_key_matches(state.config.api_key, std::string_view(authorization.data(), authorization.size())))
    return error_response(request, ApiError(401, "a valid API key is needed: 'Authorization: Bearer KEY'", "",
                                            "invalid_api_key"));
  const auto only = [&](http::verb verb) -> std::optional<http::response<http::string_body>> {
    if (request.method() == verb) return std::nullopt;
    auto response = error_response(
        request, ApiError(405, fmt::format("use {} for {}", std::string(http::to_string(verb)), path), "",
                          "method_not_allowed"));
    response.set(http::field::allow, http::to_string(verb));
    return response;
  };
  if (path == "/v1/models") {
    if (auto refused = only(http::verb::get)) return refused;
    if (!ready) return error_response(request, ApiError(503, "the model is still loading", "", "loading"));
    return json_response(request, http::status::ok, models_body(state));
  }
  if (path == "/metrics") {
    if (auto refused = only(http::verb::get)) return refused;
    return text_response(request, http::status::ok, state.metrics.render(state.inbox.gauges()),
                         "text/plain; version=0.0.4; charset=utf-8");
  }
  Endpoint endpoint;
  if (endpoint_for_path(path, endpoint)) return only(http::verb::post);
  return error_response(
      request,
      ApiError(404, fmt::format("no such endpoint: {} {}", std::string(request.method_string()), path), "",
               "not_found"));
}

// After refusing a request whose body is still arriving: stop sending, then read and drop what
// the client still sends (for a few seconds at most), so that closing does not reset the
// connection before the client has read the answer.
net::awaitable<void> drain(beast::tcp_stream& stream) {
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::seconds(5));
  std::array<char, 16384> sink;
  while (!ec) co_await stream.async_read_some(net::buffer(sink), net::redirect_error(net::use_awaitable, ec));
}

net::awaitable<void> session(HttpServer::State& state, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  struct Counted {
    std::atomic<int64_t>& n;
    ~Counted() { --n; }
  } counted{state.connections};
  beast::flat_buffer buffer;
  try {
    if (state.connections.fetch_add(1) >= state.config.max_connections) {
      HttpRequest none;
      auto response = error_response(none, ApiError(503, "too many connections", "", "too_many_connections"));
      response.keep_alive(false);
      co_await http::async_write(stream, response, net::use_awaitable);
      co_return;
    }
    for (bool keep = true; keep && !state.abandon;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(state.config.max_body_bytes);
      stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(state.config.read_timeout)));
      boost::system::error_code ec;
      co_await http::async_read(stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      stream.expires_never();
      if (ec == http::error::body_limit) {
        HttpRequest header = parser.get();
        header.keep_alive(false);
        state.metrics.count_refused(413);
        auto response =
            error_response(header, ApiError(413,
                                            fmt::format("the body is larger than {} bytes (--max-body-bytes)",
                                                        state.config.max_body_bytes),
                                            "", "body_too_large"));
        co_await http::async_write(stream, response, net::use_awaitable);
        co_await drain(stream);
        break;
      }
      if (ec) break;  // closed, timed out or not HTTP
      HttpRequest request = parser.release();
      if (auto response = simple_route(state, request)) {
        keep = response->keep_alive();
        co_await http::async_write(stream, *response, net::use_awaitable);
        continue;
      }
      Endpoint endpoint;
      endpoint_for_path(request_path(request), endpoint);  // simple_route let only these through
      keep = co_await run_completion(state, stream, request, endpoint);
    }
  } catch (const std::exception&) {
    // a write failed: the client is gone
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

net::awaitable<void> accept_loop(HttpServer::State& state) {
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket = co_await state.acceptor.async_accept(net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      if (!state.acceptor.is_open()) co_return;  // shutting down
      continue;
    }
    net::co_spawn(state.io, session(state, std::move(socket)), net::detached);
  }
}

// SIGTERM / SIGINT: stop accepting and close the inbox (the engine finishes what it holds and
// returns); after the shutdown timeout, whatever still runs is cancelled.
void on_signal(HttpServer::State& state, int signal_number) {
  if (state.shutting_down.exchange(true)) return;
  std::fprintf(stderr, "kvshrink: SIG%s: no new requests; the %lld running or waiting get up to %.0f s\n",
               sigabbrev_np(signal_number),
               static_cast<long long>(state.inbox.gauges().running + state.inbox.gauges().waiting),
               state.config.shutdown_timeout);
  boost::system::error_code ignored;
  state.acceptor.close(ignored);
  state.inbox.close();
  state.shutdown_deadline.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(state.config.shutdown_timeout)));
  state.shutdown_deadline.async_wait([&state](const boost::system::error_code& ec) {
    if (ec) return;
    std::fprintf(stderr, "kvshrink: shutdown timeout: cancelling the requests still running\n");
    state.abandon = true;
  });
}

}  // namespace

http::response<http::string_body> json_response(const HttpRequest& request, http::status status,
                                                const std::string& body) {
  return text_response(request, status, body, "application/json");
}

http::response<http::string_body> error_response(const HttpRequest& request, const ApiError& error) {
  return json_response(request, static_cast<http::status>(error.status), error_body(error).dump());
}

HttpServer::HttpServer(const HttpServerConfig& config, engine::RequestInbox& inbox)
    : state_(std::make_shared<State>(config, inbox)) {}

HttpServer::~HttpServer() {
  if (io_thread_.joinable()) {
    state_->io.stop();
    io_thread_.join();
  }
}

void HttpServer::start() {
  auto& s = *state_;
  try {
    const tcp::endpoint endpoint(net::ip::make_address(s.config.host),
                                 static_cast<unsigned short>(s.config.port));
    s.acceptor.open(endpoint.protocol());
    s.acceptor.set_option(net::socket_base::reuse_address(true));
    s.acceptor.bind(endpoint);
    s.acceptor.listen();
  } catch (const std::exception& e) {
    throw std::runtime_error(
        fmt::format("cannot listen on {}:{}: {}", s.config.host, s.config.port, e.what()));
  }
  s.signals.add(SIGTERM);
  s.signals.add(SIGINT);
  s.signals.add(SIGUSR1);  // what mpirun forwards to the ranks without killing them after
  s.signals.async_wait([&s](const boost::system::error_code& ec, int signal_number) {
    if (!ec) on_signal(s, signal_number);
  });
  net::co_spawn(s.io, accept_loop(s), net::detached);
  io_thread_ = std::thread([&s] { s.io.run(); });
}

int HttpServer::port() const {
  return state_->acceptor.local_endpoint().port();
}

void HttpServer::set_ready(const engine::Tokenizer& tokenizer, ApiSettings settings) {
  net::post(state_->io, [s = state_, &tokenizer, settings = std::move(settings)]() mutable {
    s->tokenizer = &tokenizer;
    s->settings = std::move(settings);
    s->ready.store(true, std::memory_order_release);
  });
}

void HttpServer::stop() {
  auto& s = *state_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (s.in_flight > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.io.stop();
  if (io_thread_.joinable()) io_thread_.join();
}

}  // namespace kvshrink::launch
