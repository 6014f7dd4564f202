// Collective communication between the tensor-parallel ranks. Backends: MPI (CPU), NCCL (GPU,
// later). Every collective must be called by all ranks in the same order (SPMD).
//
// No rank hangs on a rank that stopped (SIGSTOP, a debugger, a frozen node): a rank that waited
// KVSHRINK_COMM_TIMEOUT seconds (default kDefaultCommTimeoutSeconds = 60; 0 = wait forever) in a
// collective pings every rank and, if one does not answer within min(timeout, 5 s), the job ends
// with exit code 1 and one line naming it:
//
//   kvshrink: error: rank 2 did not answer for 60 s (stopped, dead or stuck); ending the job
//
// Every rank waiting in a collective answers, so a slow collective (a rank busy in long work that
// still calls collectives now and then) only waits longer. A rank that works longer than the
// timeout without calling any collective (a coordinator idle until the next request) must call
// keep_alive() every few seconds meanwhile. A rank that dies ends the job through Open MPI, about
// 1 s after its death. The mechanism is comm/mpi_watchdog.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "comm/world.h"

namespace kvshrink::comm {

inline constexpr double kDefaultCommTimeoutSeconds = 60;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const World& world() const = 0;

  // In place: data[i] = sum over ranks of data[i].
  virtual void all_reduce_sum(std::span<float> data) = 0;
  // In place: data[i] = max over ranks of data[i] (used to agree on error flags).
  virtual void all_reduce_max(std::span<int64_t> data) = 0;
  // recv = concatenation over ranks r = 0..size-1 of rank r's send, whose length is counts[r]
  // (counts identical on every rank; recv.size() == sum of counts).
  virtual void all_gather(std::span<const float> send, std::span<float> recv,
                          std::span<const int64_t> counts) = 0;
  virtual void all_gather(std::span<const int64_t> send, std::span<int64_t> recv,
                          std::span<const int64_t> counts) = 0;
  // Root's bytes are copied into data on every other rank (same size on all ranks).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job at once (every rank) with the given exit code; the message is printed
  // once, by the calling rank, to stderr.
  [[noreturn]] virtual void abort(int exit_code, std::string_view message) = 0;

  // Collective: a communicator over the same ranks whose messages never mix with this one's (the
  // engine's control and data planes, comm/planes.h). It does not own the backend: destroy it
  // before the communicator that made MPI (or NCCL).
  virtual std::unique_ptr<Communicator> duplicate() const = 0;
  // Not collective, never blocks: answers the other ranks' liveness pings (see the top of this
  // file). Call it every few seconds while this rank runs longer than the timeout without a
  // collective.
  virtual void keep_alive() = 0;
  // Not collective: waits until done() returns true under this communicator's stall watchdog, for
  // a collective of another transport (the NCCL data plane's, on a CUDA stream): the other ranks'
  // pings are answered meanwhile, and a rank that stops answering for the timeout ends the job
  // with the one line above. done() may throw. The MPI backend's own waits work this way.
  virtual void wait_watched(const std::function<bool()>& done) = 0;

  // One value per rank: result[r] is rank r's value (e.g. each rank's free KV blocks).
  std::vector<int64_t> all_gather_value(int64_t value);

  // Typed helpers over broadcast.
  template <typename T>
  void broadcast_values(std::span<T> values, int root) {
    broadcast(std::as_writable_bytes(values), root);
  }
  template <typename T>
  T broadcast_value(T value, int root) {
    broadcast(std::as_writable_bytes(std::span<T>(&value, 1)), root);
    return value;
  }
  // Variable length: the root's vector (any length) arrives on every rank.
  template <typename T>
  void broadcast_vector(std::vector<T>& values, int root) {
    auto n = broadcast_value<uint64_t>(values.size(), root);
    values.resize(n);
    broadcast_values(std::span<T>(values), root);
  }
  void broadcast_string(std::string& text, int root);
};

// Initialises MPI (thread level FUNNELED) and returns the MPI backend for MPI_COMM_WORLD.
// Finalises MPI when destroyed. Works without mpirun as a single rank. The engine's two planes:
// make_mpi_planes (comm/planes.h).
std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv);

}  // namespace kvshrink::comm
