// Waiting for MPI requests without hanging on a rank that stopped. Every collective of the MPI
// backend is non-blocking (MPI_Iallreduce, MPI_Ibcast, ...) and waits here:
//
//   1. MPI_Test in a loop: spinning for the first 100 us (a collective whose ranks are all there
//      completes in microseconds), then yielding the core until 2 ms, then sleeping from 20 us
//      doubling to 1 ms, so ranks waiting for another (workers waiting for rank 0's next step) do
//      not burn a core. While it waits past the spin, a rank answers the others' pings.
//   2. After `timeout` without completion the rank pings every other rank (a private duplicate of
//      MPI_COMM_WORLD, so pings never mix with the program's messages) and waits up to
//      min(timeout, 5 s) for the answers. Every rank that waits in a collective, or calls
//      keep_alive(), answers.
//   3. If every rank answered, the collective is only slow (a rank busy in long work that still
//      calls collectives): the wait starts over. Otherwise the lowest rank that answered prints
//        kvshrink: error: rank 2 did not answer for 60 s (stopped, dead or stuck); ending the job
//      once and ends the job with MPI_Abort (exit code 1). The other ranks tell it what they found
//      and print only if it is gone too.
//
// A rank that dies is found by Open MPI itself, which ends the job about 1 s after the death.
#pragma once

#include <chrono>
#include <functional>
#include <string_view>
#include <vector>

#include "comm/mpi_c_api.h"

namespace kvshrink::comm {

// Prints "kvshrink: error: MESSAGE" to stderr and ends every rank of the job with exit_code.
[[noreturn]] void abort_job(int exit_code, std::string_view message);

// Throws std::runtime_error naming the MPI call and MPI's own description of the error.
void check_mpi(int code, const char* call);

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // Collective over MPI_COMM_WORLD. The timeout is rank 0's KVSHRINK_COMM_TIMEOUT (seconds, 0 =
  // wait forever as plain MPI does; default kDefaultCommTimeoutSeconds), sent to every rank so
  // that `mpirun -x` is not needed; throws std::invalid_argument on every rank if it is not a
  // number of seconds in [0, 1e6].
  Watchdog();
  // Collective: waits for every rank (ending the job on a stopped one), then cancels the posted
  // receives and frees the private communicator. Runs just before MPI_Finalize.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Waits until `request` completes; ends the job if a rank stops answering meanwhile. `call`
  // names the MPI operation in errors.
  void wait(MPI_Request& request, const char* call);
  // The same wait for anything a poll can test (another transport's collective, e.g. NCCL's on a
  // CUDA stream): until done() returns true; done() may throw.
  void wait_until(const std::function<bool()>& done);

  // Answers pending pings (and acts on a stall report); cheap, never blocks.
  void answer_pings();

 private:
  // Pings every other rank; returns those that did not answer within the answer window.
  std::vector<int> unanswered_ranks();
  // Ends the job if `missing` is not empty: reports it here, or hands it to the reporting rank.
  void end_job_if_missing(const std::vector<int>& missing);
  [[noreturn]] void report(const std::vector<int>& missing);
  void post_ping_receive();
  void post_stall_receive();

  MPI_Comm comm_ = MPI_COMM_NULL;  // private duplicate of MPI_COMM_WORLD
  int rank_ = 0;
  int size_ = 1;
  std::chrono::duration<double> timeout_{0};
  Clock::duration answer_window_;
  Clock::time_point last_answered_;
  MPI_Request ping_request_ = MPI_REQUEST_NULL;   // receives a ping from any rank
  MPI_Request stall_request_ = MPI_REQUEST_NULL;  // receives another rank's list of missing ranks
  int ping_buffer_ = 0;
  std::vector<int> stall_buffer_;
};

}  // namespace kvshrink::comm
