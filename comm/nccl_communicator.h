// The NCCL backend of Communicator, for the data plane of the CUDA backend (comm/planes.h): the
// activation all-reduces and the logit and score gathers, over NVLink / PCIe / InfiniBand between
// the ranks' GPUs. One GPU per rank (NCCL refuses two ranks on one device; make_planes_for_cuda
// keeps the MPI data plane then).
//
// Setup: collective over the MPI control plane, which it keeps by reference (the control plane
// must outlive it): rank 0's ncclUniqueId is broadcast over it, then ncclCommInitRank on the given
// device with a stream of its own.
//
// Staging: the engine's activations are still host buffers, so each collective copies its input
// into one device buffer (grown as needed and kept), runs the NCCL call on the stream, waits for
// it and copies the result back: every call is synchronous like the MPI backend's.
//
// Waiting: each collective's stream is polled under the control plane's stall watchdog
// (Communicator::wait_watched, comm/mpi_watchdog.h): the other ranks' pings are answered meanwhile,
// and a rank that stops answering for KVSHRINK_COMM_TIMEOUT ends the job with one line naming it,
// as in an MPI collective. An NCCL asynchronous error aborts the NCCL communicator and throws.
// barrier, abort, keep_alive and world() go to the control plane.
//
// Errors: std::runtime_error naming the NCCL (or CUDA) call and ncclGetErrorString (or
// cudaGetErrorString); bad arguments as the MPI backend (std::invalid_argument).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "comm/communicator.h"
#include "comm/traffic.h"

namespace kvshrink::comm {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `control` (every rank, each with its own device): makes `device` the calling
  // thread's current CUDA device, which must stay current for this communicator's calls.
  NcclCommunicator(Communicator& control, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  const World& world() const override { return control_.world(); }

  void all_reduce_sum(std::span<float> data) override;
  void all_reduce_max(std::span<int64_t> data) override;
  void all_gather(std::span<const float> send, std::span<float> recv,
                  std::span<const int64_t> counts) override;
  void all_gather(std::span<const int64_t> send, std::span<int64_t> recv,
                  std::span<const int64_t> counts) override;
  void broadcast(std::span<std::byte> data, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int exit_code, std::string_view message) override;
  // Collective: a new NCCL communicator on the same device and control plane.
  std::unique_ptr<Communicator> duplicate() const override;
  void keep_alive() override;
  void wait_watched(const std::function<bool()>& done) override { control_.wait_watched(done); }

  int device() const { return device_; }
  // What this communicator's collectives carried on this rank so far (comm/traffic.h).
  const Traffic& traffic() const { return traffic_; }
  // A named communicator prints its traffic when destroyed if KVSHRINK_COMM_STATS is set.
  void set_name(const std::string& name) { name_ = name; }

 private:
  // The staging buffer, holding at least `bytes` (grown, never shrunk).
  std::byte* staging(size_t bytes);
  void upload(const void* host, size_t bytes, size_t offset = 0);
  void download(void* host, size_t bytes, size_t offset = 0);
  // Waits for the stream (see the top of this file); `call` names the NCCL operation in errors.
  void wait(const char* call);
  void all_reduce(void* data, size_t count, size_t type_size, ncclDataType_t type, ncclRedOp_t op);
  void gather(const void* send, void* recv, std::span<const int64_t> counts, size_t send_size,
              size_t recv_size, ncclDataType_t type, size_t type_size);
  void release() noexcept;

  Communicator& control_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::byte* staging_ = nullptr;  // device memory
  size_t staging_bytes_ = 0;
  Traffic traffic_;
  std::string name_;  // empty: never prints its traffic
};

}  // namespace kvshrink::comm
