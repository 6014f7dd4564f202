#include "comm/mpi_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "comm/mpi_watchdog.h"
#include "comm/planes.h"

namespace kvshrink::comm {
namespace {

// MPI counts are int: a buffer of `count` elements goes through in chunks of at most INT_MAX.
template <typename ChunkFn>
void for_each_chunk(size_t count, ChunkFn chunk_fn) {
  constexpr size_t kMaxChunk = INT_MAX;
  for (size_t offset = 0; offset < count; offset += kMaxChunk) {
    chunk_fn(offset, static_cast<int>(std::min(kMaxChunk, count - offset)));
  }
}

// The process's one watchdog: made, right after MPI_Init, by the communicator that owns MPI and
// ended by it just before MPI_Finalize; every MpiCommunicator (self(), duplicates) waits through it.
std::unique_ptr<Watchdog> process_watchdog;

}  // namespace

MpiCommunicator::MpiCommunicator(int* argc, char*** argv) {
  int initialized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  if (initialized) {
    throw std::runtime_error("MPI is already initialised: create one MpiCommunicator per process");
  }
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_FUNNELED) {
    throw std::runtime_error("the MPI library does not support MPI_THREAD_FUNNELED");
  }
  try {
    process_watchdog = std::make_unique<Watchdog>();
  } catch (...) {
    MPI_Finalize();  // every rank fails alike (the timeout comes from rank 0)
    throw;
  }
  *this = MpiCommunicator(MPI_COMM_WORLD, true);
}

MpiCommunicator MpiCommunicator::self() {
  if (!process_watchdog) throw std::runtime_error("MpiCommunicator::self() needs an MpiCommunicator first");
  return MpiCommunicator(MPI_COMM_SELF, false);
}

MpiCommunicator::MpiCommunicator(MPI_Comm base, bool owns_mpi) : owns_mpi_(owns_mpi) {
  // MPI_Comm_dup copies the error handler, so our communicator returns errors as well.
  check_mpi(MPI_Comm_set_errhandler(base, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_dup(base, &comm_), "MPI_Comm_dup");
  check_mpi(MPI_Comm_rank(comm_, &world_.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &world_.size), "MPI_Comm_size");

  // The processes sharing memory with this one are the ones on this node.
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, world_.rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  check_mpi(MPI_Comm_rank(node, &world_.local_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(node, &world_.local_size), "MPI_Comm_size");
  check_mpi(MPI_Comm_free(&node), "MPI_Comm_free");
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ == MPI_COMM_NULL) return;
  if (!name_.empty() && traffic_report_requested()) {
    std::fprintf(stderr, "kvshrink: comm-stats %s\n", traffic_json(traffic_, world_, name_).c_str());
  }
  // A destructor cannot report errors; the process is ending MPI anyway.
  MPI_Comm_free(&comm_);
  if (!owns_mpi_) return;
  process_watchdog.reset();
  MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(MpiCommunicator&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      owns_mpi_(other.owns_mpi_),
      world_(other.world_),
      traffic_(other.traffic_),
      name_(std::move(other.name_)) {}

// At most one of the two owns MPI (MPI initialises once per process); after the swap `other`
// holds what this held, moved-from state included, and cleans it up.
MpiCommunicator& MpiCommunicator::operator=(MpiCommunicator&& other) noexcept {
  std::swap(comm_, other.comm_);
  std::swap(owns_mpi_, other.owns_mpi_);
  std::swap(world_, other.world_);
  std::swap(traffic_, other.traffic_);
  std::swap(name_, other.name_);
  return *this;
}

void MpiCommunicator::wait(MPI_Request& request, const char* call) {
  process_watchdog->wait(request, call);
}

void MpiCommunicator::set_name(const std::string& name) {
  check_mpi(MPI_Comm_set_name(comm_, name.c_str()), "MPI_Comm_set_name");
  name_ = name;
}

void MpiCommunicator::all_reduce_sum(std::span<float> data) {
  ++traffic_.all_reduce.calls;
  traffic_.all_reduce.bytes += data.size_bytes();
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data.data() + offset, count, MPI_FLOAT, MPI_SUM, comm_, &request),
              "MPI_Iallreduce");
    wait(request, "MPI_Iallreduce");
  });
}

void MpiCommunicator::all_reduce_max(std::span<int64_t> data) {
  ++traffic_.all_reduce.calls;
  traffic_.all_reduce.bytes += data.size_bytes();
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(
        MPI_Iallreduce(MPI_IN_PLACE, data.data() + offset, count, MPI_INT64_T, MPI_MAX, comm_, &request),
        "MPI_Iallreduce");
    wait(request, "MPI_Iallreduce");
  });
}

void MpiCommunicator::all_gather(std::span<const float> send, std::span<float> recv,
                                 std::span<const int64_t> counts) {
  gather(send.data(), recv.data(), counts, send.size(), recv.size(), MPI_FLOAT);
}

void MpiCommunicator::all_gather(std::span<const int64_t> send, std::span<int64_t> recv,
                                 std::span<const int64_t> counts) {
  gather(send.data(), recv.data(), counts, send.size(), recv.size(), MPI_INT64_T);
}

// all_gather of `type` elements: checks the counts against both buffers, then MPI_Iallgatherv.
void MpiCommunicator::gather(const void* send, void* recv, std::span<const int64_t> counts, size_t send_size,
                             size_t recv_size, MPI_Datatype type) {
  if (counts.size() != static_cast<size_t>(world_.size)) {
    throw std::invalid_argument(
        fmt::format("all_gather: {} counts given for {} ranks", counts.size(), world_.size));
  }
  // MPI_Iallgatherv takes int counts and int displacements: the gathered total must fit an int.
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
  if (send_size != static_cast<size_t>(counts[world_.rank])) {
    throw std::invalid_argument(fmt::format("all_gather: rank {} sends {} elements but its count is {}",
                                            world_.rank, send_size, counts[world_.rank]));
  }
  if (recv_size != static_cast<size_t>(total)) {
    throw std::invalid_argument(
        fmt::format("all_gather: receive buffer holds {} elements, counts sum to {}", recv_size, total));
  }
  int type_size = 0;
  check_mpi(MPI_Type_size(type, &type_size), "MPI_Type_size");
  ++traffic_.all_gather.calls;
  traffic_.all_gather.bytes += recv_size * type_size;
  traffic_.all_gather_sent += send_size * type_size;
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallgatherv(send, int_counts[world_.rank], type, recv, int_counts.data(),
                            displacements.data(), type, comm_, &request),
            "MPI_Iallgatherv");
  wait(request, "MPI_Iallgatherv");
}

void MpiCommunicator::broadcast(std::span<std::byte> data, int root) {
  if (root < 0 || root >= world_.size) {
    throw std::invalid_argument(fmt::format("broadcast: root {} is not a rank of {}", root, world_.size));
  }
  ++traffic_.broadcast.calls;
  traffic_.broadcast.bytes += data.size();
  if (root == world_.rank) traffic_.broadcast_root_bytes += data.size();
  for_each_chunk(data.size(), [&](size_t offset, int count) {
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Ibcast(data.data() + offset, count, MPI_BYTE, root, comm_, &request), "MPI_Ibcast");
    wait(request, "MPI_Ibcast");
  });
}

void MpiCommunicator::barrier() {
  ++traffic_.barriers;
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
  wait(request, "MPI_Ibarrier");
}

void MpiCommunicator::abort(int exit_code, std::string_view message) {
  abort_job(exit_code, message);
}

std::unique_ptr<Communicator> MpiCommunicator::duplicate() const {
  return std::unique_ptr<Communicator>(new MpiCommunicator(comm_, false));
}

void MpiCommunicator::keep_alive() {
  process_watchdog->answer_pings();
}

void MpiCommunicator::wait_watched(const std::function<bool()>& done) {
  process_watchdog->wait_until(done);
}

std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv) {
  return std::make_unique<MpiCommunicator>(argc, argv);
}

Planes make_mpi_planes(int* argc, char*** argv) {
  auto control = std::make_unique<MpiCommunicator>(argc, argv);
  control->set_name("control");
  auto data = control->duplicate();
  static_cast<MpiCommunicator&>(*data).set_name("data");
  Planes planes;
  planes.control = std::move(control);
  planes.data = std::move(data);
  return planes;
}

}  // namespace kvshrink::comm
