// Collective communication between the tensor-parallel ranks. Backends: MPI (CPU), NCCL (GPU,
// later). Every collective must be called by all ranks in the same order (SPMD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "comm/world.h"

namespace kvshrink::comm {

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
  // Root's bytes are copied into data on every other rank (same size on all ranks).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job at once (every rank) with the given exit code; the message is printed
  // once, by the calling rank, to stderr.
  [[noreturn]] virtual void abort(int exit_code, std::string_view message) = 0;

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
// Finalises MPI when destroyed. Works without mpirun as a single rank.
std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv);

}  // namespace kvshrink::comm
