#include "comm/mpi_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <utility>
#include <vector>

namespace kvshrink::comm {
namespace {

// Throws std::runtime_error naming the MPI call and MPI's own description of the error.
void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw std::runtime_error(
      fmt::format("{} failed: {} (MPI error code {})", call, std::string_view(text, length), code));
}

// MPI counts are int: a buffer of `count` elements goes through in chunks of at most INT_MAX.
template <typename ChunkFn>
void for_each_chunk(size_t count, ChunkFn chunk_fn) {
  constexpr size_t kMaxChunk = INT_MAX;
  for (size_t offset = 0; offset < count; offset += kMaxChunk) {
    chunk_fn(offset, static_cast<int>(std::min(kMaxChunk, count - offset)));
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(int* argc, char*** argv) {
  int initialized = 0;
  check(MPI_Initialized(&initialized), "MPI_Initialized");
  if (initialized) {
    throw std::runtime_error("MPI is already initialised: create one MpiCommunicator per process");
  }
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_FUNNELED) {
    throw std::runtime_error("the MPI library does not support MPI_THREAD_FUNNELED");
  }
  *this = MpiCommunicator(MPI_COMM_WORLD, true);
}

MpiCommunicator MpiCommunicator::self() {
  int initialized = 0;
  check(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) throw std::runtime_error("MpiCommunicator::self() needs MPI initialised first");
  return MpiCommunicator(MPI_COMM_SELF, false);
}

MpiCommunicator::MpiCommunicator(MPI_Comm base, bool owns_mpi) : owns_mpi_(owns_mpi) {
  // MPI_Comm_dup copies the error handler, so our communicator returns errors as well.
  check(MPI_Comm_set_errhandler(base, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_dup(base, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_rank(comm_, &world_.rank), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &world_.size), "MPI_Comm_size");

  // The processes sharing memory with this one are the ones on this node.
  MPI_Comm node = MPI_COMM_NULL;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, world_.rank, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type");
  check(MPI_Comm_rank(node, &world_.local_rank), "MPI_Comm_rank");
  check(MPI_Comm_size(node, &world_.local_size), "MPI_Comm_size");
  check(MPI_Comm_free(&node), "MPI_Comm_free");
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ == MPI_COMM_NULL) return;
  // A destructor cannot report errors; the process is ending MPI anyway.
  MPI_Comm_free(&comm_);
  if (owns_mpi_) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(MpiCommunicator&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)), owns_mpi_(other.owns_mpi_), world_(other.world_) {}

// At most one of the two owns MPI (MPI initialises once per process); after the swap `other`
// holds what this held, moved-from state included, and cleans it up.
MpiCommunicator& MpiCommunicator::operator=(MpiCommunicator&& other) noexcept {
  std::swap(comm_, other.comm_);
  std::swap(owns_mpi_, other.owns_mpi_);
  std::swap(world_, other.world_);
  return *this;
}

void MpiCommunicator::all_reduce_sum(std::span<float> data) {
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    check(MPI_Allreduce(MPI_IN_PLACE, data.data() + offset, count, MPI_FLOAT, MPI_SUM, comm_),
          "MPI_Allreduce");
  });
}

void MpiCommunicator::all_reduce_max(std::span<int64_t> data) {
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    check(MPI_Allreduce(MPI_IN_PLACE, data.data() + offset, count, MPI_INT64_T, MPI_MAX, comm_),
          "MPI_Allreduce");
  });
}

void MpiCommunicator::all_gather(std::span<const float> send, std::span<float> recv,
                                 std::span<const int64_t> counts) {
  if (counts.size() != static_cast<size_t>(world_.size)) {
    throw std::invalid_argument(
        fmt::format("all_gather: {} counts given for {} ranks", counts.size(), world_.size));
  }
  // MPI_Allgatherv takes int counts and int displacements: the gathered total must fit an int.
  std::vector<int> int_counts(world_.size);
  std::vector<int> displacements(world_.size);
  int64_t total = 0;
  for (int r = 0; r < world_.size; ++r) {
    if (counts[r] < 0) {
      throw std::invalid_argument(fmt::format("all_gather: negative count {} for rank {}", counts[r], r));
    }
    if (counts[r] > INT_MAX - total) {
      throw std::length_error(fmt::format(
          "all_gather: more than {} elements in total; MPI_Allgatherv cannot address them", INT_MAX));
    }
    displacements[r] = static_cast<int>(total);
    int_counts[r] = static_cast<int>(counts[r]);
    total += counts[r];
  }
  if (send.size() != static_cast<size_t>(counts[world_.rank])) {
    throw std::invalid_argument(fmt::format("all_gather: rank {} sends {} elements but its count is {}",
                                            world_.rank, send.size(), counts[world_.rank]));
  }
  if (recv.size() != static_cast<size_t>(total)) {
    throw std::invalid_argument(
        fmt::format("all_gather: receive buffer holds {} elements, counts sum to {}", recv.size(), total));
  }
  check(MPI_Allgatherv(send.data(), int_counts[world_.rank], MPI_FLOAT, recv.data(), int_counts.data(),
                       displacements.data(), MPI_FLOAT, comm_),
        "MPI_Allgatherv");
}

void MpiCommunicator::broadcast(std::span<std::byte> data, int root) {
  if (root < 0 || root >= world_.size) {
    throw std::invalid_argument(fmt::format("broadcast: root {} is not a rank of {}", root, world_.size));
  }
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    check(MPI_Bcast(data.data() + offset, count, MPI_BYTE, root, comm_), "MPI_Bcast");
  });
}

void MpiCommunicator::barrier() {
  check(MPI_Barrier(comm_), "MPI_Barrier");
}

void MpiCommunicator::abort(int exit_code, std::string_view message) {
  std::fflush(stdout);
  fmt::print(stderr, "kvshrink: error: {}\n", message);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
}

std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv) {
  return std::make_unique<MpiCommunicator>(argc, argv);
}

}  // namespace kvshrink::comm
