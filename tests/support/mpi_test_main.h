// main() for GoogleTest programs run under mpirun: every rank runs every test; rank 0 prints
// gtest's usual output, other ranks only their failures, tagged by rank; the job passes only if
// every rank passed. Include in exactly one file of a test program, after its tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>

#include "comm/communicator.h"

namespace kvshrink::testing {

inline comm::Communicator* g_mpi_comm = nullptr;  // set by main for the whole run

inline comm::Communicator& mpi_communicator() {
  return *g_mpi_comm;
}

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace kvshrink::testing

int main(int argc, char** argv) {
  using namespace kvshrink;
  std::unique_ptr<comm::Communicator> comm = comm::make_mpi_communicator(&argc, &argv);
  kvshrink::testing::g_mpi_comm = comm.get();
  ::testing::InitGoogleTest(&argc, argv);

  const int rank = comm->world().rank;
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new kvshrink::testing::RankFailurePrinter(rank));
  }

  int64_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  comm->all_reduce_max(std::span<int64_t>(&failed, 1));
  if (rank == 0 && failed != 0) std::fprintf(stderr, "%s: a rank failed\n", argv[0]);
  return failed != 0 ? 1 : 0;
}
