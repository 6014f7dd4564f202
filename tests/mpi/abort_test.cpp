// Not a GoogleTest: a job in which one rank aborts while the others wait in a barrier.
// expect_abort.sh runs it and checks that the whole job ends, non-zero, with one message.
#include <chrono>
#include <cstdio>
#include <thread>

#include "comm/communicator.h"

int main(int argc, char** argv) {
  auto comm = kvshrink::comm::make_mpi_communicator(&argc, &argv);
  const int aborting_rank = comm->world().size > 1 ? 1 : 0;
  if (comm->world().rank == aborting_rank) {
    // Give the other ranks time to enter the barrier.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    comm->abort(3, "abort_test: rank " + std::to_string(aborting_rank) + " stops the job");
  }
  comm->barrier();
  std::fprintf(stderr, "abort_test: rank %d left the barrier, the job was not aborted\n", comm->world().rank);
  return 0;
}
