#include "comm/mpi_watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace kvshrink::comm {
namespace {

using namespace std::chrono_literals;
using Clock = Watchdog::Clock;

constexpr const char* kTimeoutVariable = "KVSHRINK_COMM_TIMEOUT";

// Tags on the watchdog's private communicator.
constexpr int kPingTag = 1;   // "are you there?", empty
constexpr int kPongTag = 2;   // the answer, empty
constexpr int kStallTag = 3;  // to the reporting rank: the ranks that did not answer
const int kEmpty = 0;         // the (unread) payload of pings and pongs

constexpr auto kSpin = 100us;
constexpr auto kYieldUntil = 2ms;
constexpr auto kFirstSleep = 20us;
constexpr auto kLongestSleep = 1ms;
constexpr auto kLongestAnswerWindow = 5s;
constexpr auto kAnswerInterval = 100ms;  // a rank in short collectives answers at most this often

// Spins, then yields the core, then sleeps ever longer (see the header).
class Backoff {
 public:
  explicit Backoff(Clock::time_point start) : start_(start) {}

  bool spinning(Clock::time_point now) const { return now - start_ < kSpin; }

  void pause(Clock::time_point now) {
    if (spinning(now)) return;
    if (now - start_ < kYieldUntil) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min<Clock::duration>(2 * sleep_, kLongestSleep);
  }

 private:
  Clock::time_point start_;
  Clock::duration sleep_ = kFirstSleep;
};

// Sends an empty message that nobody waits for: MPI completes it in the background.
void send_and_forget(const void* data, int count, int destination, int tag, MPI_Comm comm) {
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Isend(data, count, MPI_INT, destination, tag, comm, &request), "MPI_Isend");
  check_mpi(MPI_Request_free(&request), "MPI_Request_free");
}

// True once `request` has completed; the status goes to `status` when given.
bool completed(MPI_Request& request, MPI_Status* status = MPI_STATUS_IGNORE) {
  int done = 0;
  check_mpi(MPI_Test(&request, &done, status), "MPI_Test");
  return done != 0;
}

// "rank 2" or "ranks 0, 2".
std::string rank_list(const std::vector<int>& ranks) {
  std::string list = ranks.size() == 1 ? "rank" : "ranks";
  for (size_t i = 0; i < ranks.size(); ++i) list += fmt::format("{}{}", i == 0 ? " " : ", ", ranks[i]);
  return list;
}

void cancel(MPI_Request& request) {
  if (request == MPI_REQUEST_NULL) return;
  MPI_Cancel(&request);
  MPI_Wait(&request, MPI_STATUS_IGNORE);
}

// The timeout in seconds that `text` (the environment variable, or null) asks for; NaN if it is
// not a number in [0, 1e6].
double timeout_seconds(const char* text) {
  if (text == nullptr || *text == '\0') return kDefaultCommTimeoutSeconds;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (*end != '\0' || !(seconds >= 0 && seconds <= 1e6)) return std::nan("");
  return seconds;
}

}  // namespace

[[noreturn]] void abort_job(int exit_code, std::string_view message) {
  std::fflush(stdout);
  fmt::print(stderr, "kvshrink: error: {}\n", message);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
}

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw std::runtime_error(
      fmt::format("{} failed: {} (MPI error code {})", call, std::string_view(text, length), code));
}

Watchdog::Watchdog() : last_answered_(Clock::now()) {
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  double seconds = rank_ == 0 ? timeout_seconds(std::getenv(kTimeoutVariable)) : 0.0;
  check_mpi(MPI_Bcast(&seconds, 1, MPI_DOUBLE, 0, comm_), "MPI_Bcast");
  if (std::isnan(seconds)) {
    MPI_Comm_free(&comm_);
    throw std::invalid_argument(
        fmt::format("{} (rank 0's) is not a number of seconds from 0 (no timeout) to 1e6", kTimeoutVariable));
  }
  timeout_ = std::chrono::duration<double>(seconds);
  answer_window_ =
      std::min<Clock::duration>(std::chrono::duration_cast<Clock::duration>(timeout_), kLongestAnswerWindow);
  stall_buffer_.resize(size_);
  post_ping_receive();
  post_stall_receive();
}

Watchdog::~Watchdog() {
  // MPI_Finalize waits for every rank without a timeout: meet them here first, so a rank that
  // stopped ends the job instead of hanging it at its end.
  MPI_Request request = MPI_REQUEST_NULL;
  try {
    check_mpi(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
    wait(request, "MPI_Ibarrier");
  } catch (const std::exception&) {
    // A destructor cannot report errors; the process is ending MPI anyway.
  }
  cancel(ping_request_);
  cancel(stall_request_);
  MPI_Comm_free(&comm_);
}

void Watchdog::post_ping_receive() {
  check_mpi(MPI_Irecv(&ping_buffer_, 1, MPI_INT, MPI_ANY_SOURCE, kPingTag, comm_, &ping_request_),
            "MPI_Irecv");
}

void Watchdog::post_stall_receive() {
  check_mpi(
      MPI_Irecv(stall_buffer_.data(), size_, MPI_INT, MPI_ANY_SOURCE, kStallTag, comm_, &stall_request_),
      "MPI_Irecv");
}

void Watchdog::answer_pings() {
  last_answered_ = Clock::now();
  MPI_Status status;
  while (completed(ping_request_, &status)) {
    send_and_forget(&kEmpty, 1, status.MPI_SOURCE, kPongTag, comm_);
    post_ping_receive();
  }
  if (completed(stall_request_, &status)) {
    int count = 0;
    check_mpi(MPI_Get_count(&status, MPI_INT, &count), "MPI_Get_count");
    report(std::vector<int>(stall_buffer_.begin(), stall_buffer_.begin() + count));
  }
}

void Watchdog::wait(MPI_Request& request, const char* call) {
  wait_until([&] {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
    return done != 0;
  });
}

void Watchdog::wait_until(const std::function<bool()>& done) {
  const auto start = Clock::now();
  if (start - last_answered_ > kAnswerInterval) answer_pings();
  const bool timed = timeout_.count() > 0;
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(timeout_);
  Backoff backoff(start);
  for (;;) {
    if (done()) return;
    const auto now = Clock::now();
    if (!backoff.spinning(now)) answer_pings();
    if (timed && now >= deadline) {
      end_job_if_missing(unanswered_ranks());
      deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
    }
    backoff.pause(now);
  }
}

std::vector<int> Watchdog::unanswered_ranks() {
  std::vector<MPI_Request> pongs(size_, MPI_REQUEST_NULL);
  std::vector<int> pong_buffers(size_);
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    check_mpi(MPI_Irecv(&pong_buffers[r], 1, MPI_INT, r, kPongTag, comm_, &pongs[r]), "MPI_Irecv");
    send_and_forget(&kEmpty, 1, r, kPingTag, comm_);
  }
  const auto start = Clock::now();
  Backoff backoff(start);
  std::vector<int> missing;
  for (auto now = start;; now = Clock::now()) {
    missing.clear();
    for (int r = 0; r < size_; ++r) {
      if (!completed(pongs[r])) missing.push_back(r);
    }
    if (missing.empty() || now - start > answer_window_) return missing;
    answer_pings();
    backoff.pause(now);
  }
}

void Watchdog::end_job_if_missing(const std::vector<int>& missing) {
  if (missing.empty()) return;
  int reporter = 0;
  while (std::find(missing.begin(), missing.end(), reporter) != missing.end()) ++reporter;
  if (reporter == rank_) report(missing);

  send_and_forget(missing.data(), static_cast<int>(missing.size()), reporter, kStallTag, comm_);
  // The reporter ends the job at once; report here only if it is gone as well.
  const auto start = Clock::now();
  Backoff backoff(start);
  for (auto now = start; now - start < answer_window_; now = Clock::now()) {
    answer_pings();
    backoff.pause(now);
  }
  report(missing);
}

void Watchdog::report(const std::vector<int>& missing) {
  abort_job(1, fmt::format("{} did not answer for {:g} s (stopped, dead or stuck); ending the job",
                           rank_list(missing), timeout_.count()));
}

}  // namespace kvshrink::comm
