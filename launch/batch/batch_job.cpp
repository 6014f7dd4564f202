#include "launch/batch/batch_job.h"

#include <fmt/format.h>

#include <csignal>
#include <cstring>
#include <memory>
#include <thread>

#include "launch/openai/completion_response.h"
#include "launch/openai/completion_text.h"

namespace kvshrink::launch {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// One line the engine runs: what its record is made from when it ends.
struct InFlight {
  InFlight(const BatchLine& line, CompletionJob job, const engine::Tokenizer& tokenizer)
      : line(line), job(std::move(job)), text(tokenizer, this->job.request.stop) {}
  const BatchLine& line;
  CompletionJob job;
  CompletionText text;
};

}  // namespace

BatchJob::BatchJob(const std::vector<BatchLine>& lines, BatchResultsFile& results, BatchProgress& progress,
                   engine::RequestInbox& inbox, int64_t window, const std::atomic<int>& signal)
    : lines_(lines),
      results_(results),
      progress_(progress),
      inbox_(inbox),
      window_(window),
      signal_(signal) {}

std::string BatchJob::failure() const {
  std::lock_guard lock(failure_mutex_);
  return failure_;
}

void BatchJob::fail(const std::string& why) {
  std::lock_guard lock(failure_mutex_);
  if (failure_.empty()) failure_ = why;
  failed_ = true;
}

// Appends the record unless an earlier write failed (after a failed write the file may end in a
// torn line, which only the next run may repair); false when it is not written.
bool BatchJob::write(const BatchLine& line, const json& record) {
  if (failed_) return false;
  try {
    results_.append(line, record);
  } catch (const std::exception& e) {
    fail(e.what());
    return false;
  }
  progress_.line_done();
  return true;
}

int64_t BatchJob::write_refused_lines() {
  int64_t to_run = 0;
  for (const auto& line : lines_) {
    if (results_.has(line)) continue;
    if (!line.error) {
      ++to_run;
    } else if (write(line, error_record(line, *line.error))) {
      ++refused_;
    }
  }
  return to_run;
}

void BatchJob::submit(const BatchLine& line) {
  CompletionJob parsed;
  try {
    parsed = parse_completion_request(line.endpoint, line.body, *tokenizer_, *settings_);
  } catch (const ApiError& e) {
    if (write(line, error_record(line, e))) ++refused_;
    return;
  }
  // "stream": true runs as a whole response: a batch record holds the completion, not its chunks.
  auto flight = std::make_shared<InFlight>(line, std::move(parsed), *tokenizer_);
  engine::Request request = flight->job.request;
  request.on_token = [this, flight](engine::TokenId token) {
    flight->text.push(token);
    progress_.tokens(1);
    return true;
  };
  request.on_finish = [this, flight](size_t, const engine::RequestResult& result) {
    if (result.finish == engine::FinishReason::kStoppedByCaller) return;  // cancelled: the next run does it
    flight->text.finish();
    const auto& job = flight->job;
    if (result.finish == engine::FinishReason::kError) {
      if (write(flight->line, error_record(flight->line, engine_error(result)))) ++refused_;
    } else if (write(flight->line,
                     result_record(flight->line, completion_response(job, new_response_identity(job.endpoint),
                                                                     flight->text.sent(), result)))) {
      ++completed_;
    }
  };
  request.cancelled = [this] { return stopped(); };
  inbox_.submit(std::move(request));  // no limit set: it always queues until the inbox is closed
}

// Progress, and once why the job stops.
void BatchJob::watch() {
  if (signal_ != 0 && !announced_stop_) {
    announced_stop_ = true;
    progress_.note(
        fmt::format("kvshrink: batch: SIG{}: finishing this step; the lines still running get no "
                    "record now and run again on resume",
                    sigabbrev_np(signal_)));
  }
  progress_.tick();
}

void BatchJob::submit_all() {
  for (const auto& line : lines_) {
    if (!submitting()) return;
    if (line.error || results_.has(line)) continue;
    while (submitting() && inbox_.gauges().waiting >= window_) {
      watch();
      std::this_thread::sleep_for(10ms);
    }
    if (!submitting()) return;
    submit(line);
    watch();
  }
}

void BatchJob::feed(const engine::Tokenizer& tokenizer, const ApiSettings& settings) {
  tokenizer_ = &tokenizer;
  settings_ = &settings;
  try {
    submit_all();
  } catch (const std::exception& e) {
    fail(fmt::format("internal error while submitting: {}", e.what()));
  }
  inbox_.close();
  while (!engine_done_) {
    watch();
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace kvshrink::launch
