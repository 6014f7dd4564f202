// One completion over HTTP: the body checked and submitted to the engine's inbox; the engine
// thread's tokens come back through a Pending (text deltas, then the final result) that the
// connection's coroutine sends as they arrive. A client that goes away (a failed write, or the
// socket closed while it waits) cancels its request: the scheduler frees its KV before its next step.
#include <fmt/format.h>

#include <mutex>
#include <optional>

#include "launch/openai/completion_response.h"
#include "launch/openai/completion_text.h"
#include "launch/serve/server_state.h"

namespace kvshrink::launch {
namespace {

// Between the engine thread and the connection's coroutine (on the I/O thread).
struct Pending : std::enable_shared_from_this<Pending> {
  Pending(net::io_context& io, const engine::Tokenizer& tokenizer, std::vector<std::string> stop)
      : wake(io, net::steady_timer::time_point::max()), text(tokenizer, std::move(stop)) {}
  net::steady_timer wake;  // cancelled to wake the coroutine
  std::atomic<bool> gone{false};
  CompletionText text;  // engine thread only

  std::mutex mutex;  // guards what follows
  std::string unsent;
  std::optional<engine::RequestResult> result;

  void notify() {
    net::post(wake.get_executor(), [self = shared_from_this()] { self->wake.cancel(); });
  }
  void add_text(const std::string& delta, const engine::RequestResult* final_result) {
    {
      std::lock_guard lock(mutex);
      unsent += delta;
      if (final_result) result = *final_result;
    }
    notify();
  }
  // What arrived since the last call; `done` once the result is in.
  std::string take(std::optional<engine::RequestResult>& done) {
    std::lock_guard lock(mutex);
    done = result;
    return std::exchange(unsent, {});
  }
};

// Watches the idle socket while the request runs: a client that closes it is gone.
void watch_for_hangup(beast::tcp_stream& stream, const std::shared_ptr<Pending>& pending) {
  auto& socket = stream.socket();
  socket.async_wait(tcp::socket::wait_read, [&socket, pending](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: the response is done
    char byte;
    boost::system::error_code peek_error;
    const size_t n = socket.receive(net::buffer(&byte, 1), tcp::socket::message_peek, peek_error);
    if (n == 0 || peek_error) {
      pending->gone = true;
      pending->wake.cancel();
    }
  });
}

engine::Request engine_request(HttpServer::State& state, CompletionJob& job,
                               const std::shared_ptr<Pending>& pending) {
  engine::Request request = job.request;  // the job keeps the settings for the response
  request.on_token = [&state, pending](engine::TokenId token) {
    pending->add_text(pending->text.push(token), nullptr);
    return !pending->gone && !state.abandon;
  };
  request.on_finish = [&state, pending](size_t, const engine::RequestResult& result) {
    state.metrics.count_finished(result);
    pending->add_text(pending->text.finish(), &result);
  };
  request.cancelled = [&state, pending] { return pending->gone || state.abandon; };
  return request;
}

net::awaitable<void> wait_for_engine(const std::shared_ptr<Pending>& pending) {
  boost::system::error_code ec;
  pending->wake.expires_at(net::steady_timer::time_point::max());
  co_await pending->wake.async_wait(net::redirect_error(net::use_awaitable, ec));
}

net::awaitable<bool> respond_whole(beast::tcp_stream& stream, const HttpRequest& request,
                                   const CompletionJob& job, const std::shared_ptr<Pending>& pending) {
  watch_for_hangup(stream, pending);
  std::optional<engine::RequestResult> result;
  std::string text;
  for (;;) {
    text += pending->take(result);
    if (result || pending->gone) break;
    co_await wait_for_engine(pending);
  }
  boost::system::error_code ignored;
  stream.socket().cancel(ignored);
  if (!result) co_return false;  // the client is gone; the engine drops the request
  auto response =
      result->finish == engine::FinishReason::kError
          ? error_response(request, engine_error(*result))
          : json_response(
                request, http::status::ok,
                completion_response(job, new_response_identity(job.endpoint), text, *result).dump());
  co_await http::async_write(stream, response, net::use_awaitable);
  co_return response.keep_alive();
}

std::string event(const nlohmann::json& data) {
  return "data: " + data.dump() + "\n\n";
}

net::awaitable<bool> respond_stream(beast::tcp_stream& stream, const HttpRequest& request,
                                    const CompletionJob& job, const std::shared_ptr<Pending>& pending) {
  http::response<http::empty_body> head{http::status::ok, request.version()};
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::cache_control, "no-cache");
  head.keep_alive(request.keep_alive());
  head.chunked(true);
  http::response_serializer<http::empty_body> serializer{head};
  const auto identity = new_response_identity(job.endpoint);
  try {
    co_await http::async_write_header(stream, serializer, net::use_awaitable);
    watch_for_hangup(stream, pending);
    bool first = true;
    std::optional<engine::RequestResult> result;
    for (;;) {
      const std::string delta = pending->take(result);
      std::string out;
      if (result && result->finish == engine::FinishReason::kError) {
        out = event(error_body(engine_error(*result)));
      } else {
        if (!delta.empty() || (first && job.endpoint == Endpoint::kChatCompletions)) {
          out = event(stream_chunk(job, identity, delta, first, nullptr));  // chat's first: the role
          first = false;
        }
        if (result) out += event(stream_chunk(job, identity, "", first, &*result));
        if (result && job.include_usage) out += event(usage_chunk(job, identity, *result));
      }
      if (result) out += "data: [DONE]\n\n";
      if (!out.empty())
        co_await net::async_write(stream, http::make_chunk(net::buffer(out)), net::use_awaitable);
      if (result) break;
      if (pending->gone) co_return false;
      if (delta.empty()) co_await wait_for_engine(pending);
    }
    boost::system::error_code ignored;
    stream.socket().cancel(ignored);
    co_await net::async_write(stream, http::make_chunk_last(), net::use_awaitable);
  } catch (const boost::system::system_error&) {
    pending->gone = true;  // a write failed: the client is gone
    co_return false;
  }
  co_return request.keep_alive();
}

}  // namespace

net::awaitable<bool> run_completion(HttpServer::State& state, beast::tcp_stream& stream,
                                    const HttpRequest& request, Endpoint endpoint) {
  std::optional<ApiError> refusal;
  CompletionJob job;
  std::shared_ptr<Pending> pending;
  try {
    if (!state.ready.load(std::memory_order_acquire))
      throw ApiError(503, "the model is still loading", "", "loading");
    if (state.shutting_down) throw ApiError(503, "the server is shutting down", "", "shutting_down");
    nlohmann::json body;
    try {
      body = nlohmann::json::parse(request.body());
    } catch (const nlohmann::json::parse_error& e) {
      throw ApiError(400, fmt::format("the body is not valid JSON: {}", e.what()), "", "invalid_json");
    }
    job = parse_completion_request(endpoint, body, *state.tokenizer, state.settings);
    pending = std::make_shared<Pending>(state.io, *state.tokenizer, job.request.stop);
    switch (state.inbox.submit(engine_request(state, job, pending))) {
      case engine::RequestInbox::Submitted::kQueued:
        break;
      case engine::RequestInbox::Submitted::kFull:
        throw ApiError(429, "too many requests are waiting; retry later", "", "queue_full");
      case engine::RequestInbox::Submitted::kClosed:
        throw ApiError(503, "the server is shutting down", "", "shutting_down");
    }
  } catch (const ApiError& e) {
    refusal = e;
  }
  if (refusal) {
    state.metrics.count_refused(refusal->status);
    auto response = error_response(request, *refusal);
    if (refusal->status == 429) response.set(http::field::retry_after, "1");
    co_await http::async_write(stream, response, net::use_awaitable);
    co_return response.keep_alive();
  }
  ++state.in_flight;
  struct Done {
    std::atomic<int64_t>& n;
    ~Done() { --n; }
  } done{state.in_flight};
  // (if/else, not ?: : GCC 12 miscompiles co_await inside a conditional expression)
  if (job.stream) co_return co_await respond_stream(stream, request, job, pending);
  co_return co_await respond_whole(stream, request, job, pending);
}

}  // namespace kvshrink::launch
