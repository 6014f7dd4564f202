// Not a GoogleTest: a job over the two planes (comm/planes.h) in which, by the arguments,
//   stop [RANK]  RANK (default the last) stops itself (SIGSTOP) in the middle of a loop of steps,
//   kill [RANK]  RANK kills itself (SIGKILL) there,
//   busy         rank 0 works (sleeps) for 3 s without a collective while the others wait,
//   keep-alive   the same, but rank 0 calls keep_alive() every 100 ms: the job finishes normally.
// tests.cmake runs it under KVSHRINK_COMM_TIMEOUT=1 or 3 through expect_abort.sh and checks that
// the job ends in time, naming the rank that did not answer once.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/planes.h"

namespace {

using namespace kvshrink;

// The engine's pattern: a step message on the control plane, then activation all-reduces on the
// data plane. `stopping_rank` stops or dies with `signal` at step 50.
void run_steps(comm::Planes& planes, int stopping_rank, int signal) {
  std::vector<float> activations(576, 1.0f);
  for (int step = 0;; ++step) {
    if (planes.control->world().rank == stopping_rank && step == 50) std::raise(signal);
    planes.control->broadcast_value(step, 0);
    for (int layer = 0; layer < 4; ++layer) planes.data->all_reduce_sum(activations);
  }
}

// Rank 0 is busy for 3 s (answering pings if `keep_alive`), then sends a step to every rank.
void busy_coordinator(comm::Planes& planes, bool keep_alive) {
  if (planes.control->world().is_coordinator()) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (keep_alive) planes.control->keep_alive();
    }
  }
  if (planes.control->broadcast_value(7, 0) != 7) std::fprintf(stderr, "stall_test: wrong step\n");
  planes.control->barrier();
}

}  // namespace

int main(int argc, char** argv) {
  comm::Planes planes = comm::make_mpi_planes(&argc, &argv);
  const std::string_view mode = argc > 1 ? argv[1] : "";
  const int rank = argc > 2 ? std::atoi(argv[2]) : planes.control->world().size - 1;
  if (mode == "stop") run_steps(planes, rank, SIGSTOP);
  if (mode == "kill") run_steps(planes, rank, SIGKILL);
  if (mode == "busy" || mode == "keep-alive") {
    busy_coordinator(planes, mode == "keep-alive");
    return 0;
  }
  std::fprintf(stderr, "usage: stall_test stop|kill [RANK] | busy | keep-alive\n");
  return 2;
}
