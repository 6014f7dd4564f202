// The MPI backend of Communicator: owns MPI (init in the constructor, finalize in the
// destructor) and a duplicate of MPI_COMM_WORLD whose errors come back as return codes, turned
// into std::runtime_error with MPI's error string. Collectives are non-blocking MPI calls waited
// for by the process's Watchdog (comm/mpi_watchdog.h), which ends the job on a stopped rank. Each
// collective's message size is counted (comm/traffic.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "comm/communicator.h"
#include "comm/mpi_c_api.h"
#include "comm/traffic.h"

namespace kvshrink::comm {

class MpiCommunicator final : public Communicator {
 public:
  // Calls MPI_Init_thread (MPI_THREAD_FUNNELED); throws if MPI is already initialised.
  MpiCommunicator(int* argc, char*** argv);
  ~MpiCommunicator() override;

  // A one-rank communicator over this process alone (a duplicate of MPI_COMM_SELF), for work a rank
  // does by itself inside a larger job (e.g. a reference run in a test). MPI must be initialised by
  // another MpiCommunicator, which outlives this one; this one does not finalise MPI.
  static MpiCommunicator self();

  MpiCommunicator(MpiCommunicator&& other) noexcept;
  MpiCommunicator& operator=(MpiCommunicator&& other) noexcept;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  const World& world() const override { return world_; }

  void all_reduce_sum(std::span<float> data) override;
  void all_reduce_max(std::span<int64_t> data) override;
  void all_gather(std::span<const float> send, std::span<float> recv,
                  std::span<const int64_t> counts) override;
  void all_gather(std::span<const int64_t> send, std::span<int64_t> recv,
                  std::span<const int64_t> counts) override;
  void broadcast(std::span<std::byte> data, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int exit_code, std::string_view message) override;
  std::unique_ptr<Communicator> duplicate() const override;
  void keep_alive() override;
  void wait_watched(const std::function<bool()>& done) override;

  // What this communicator's collectives carried on this rank so far.
  const Traffic& traffic() const { return traffic_; }
  // Names the communicator (also for MPI tools: MPI_Comm_set_name, e.g. Open MPI's monitoring
  // output). A named communicator prints its traffic when destroyed if KVSHRINK_COMM_STATS is set.
  void set_name(const std::string& name);

 private:
  MpiCommunicator(MPI_Comm base, bool owns_mpi);
  // Waits for a non-blocking collective through the watchdog.
  void wait(MPI_Request& request, const char* call);
  void gather(const void* send, void* recv, std::span<const int64_t> counts, size_t send_size,
              size_t recv_size, MPI_Datatype type);

  MPI_Comm comm_ = MPI_COMM_NULL;  // MPI_COMM_NULL when moved from: the destructor does nothing
  bool owns_mpi_ = true;           // finalises MPI when destroyed
  World world_;
  Traffic traffic_;
  std::string name_;  // empty: never prints its traffic
};

}  // namespace kvshrink::comm
