#include "comm/nccl_communicator.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "comm/collective_error.h"

namespace kvshrink::comm {
namespace {

// "call: NCCL's message (its last error, if any)"; empty on success.
std::string nccl_error_text(ncclResult_t result, const char* call) {
  if (result == ncclSuccess) return {};
  std::string text = fmt::format("{}: {}", call, ncclGetErrorString(result));
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += fmt::format(" ({})", last);
  return text;
}

void check_nccl(ncclResult_t result, const char* call) {
  if (result != ncclSuccess) throw std::runtime_error(nccl_error_text(result, call));
}

std::string cuda_error_text(cudaError_t status, const std::string& call) {
  if (status == cudaSuccess) return {};
  return fmt::format("{}: {}", call, cudaGetErrorString(status));
}

void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess) throw std::runtime_error(cuda_error_text(status, call));
}

// Checks all_gather's counts as the MPI backend does; returns each rank's offset in recv
// (elements, size + 1 entries: the last is the total).
std::vector<size_t> gather_offsets(std::span<const int64_t> counts, const World& world, size_t send_size,
                                   size_t recv_size) {
  if (counts.size() != static_cast<size_t>(world.size)) {
    throw std::invalid_argument(
        fmt::format("all_gather: {} counts given for {} ranks", counts.size(), world.size));
  }
  std::vector<size_t> offsets(world.size + 1, 0);
  for (int r = 0; r < world.size; ++r) {
    if (counts[r] < 0) {
      throw std::invalid_argument(fmt::format("all_gather: negative count {} for rank {}", counts[r], r));
    }
    offsets[r + 1] = offsets[r] + static_cast<size_t>(counts[r]);
  }
  if (send_size != static_cast<size_t>(counts[world.rank])) {
    throw std::invalid_argument(fmt::format("all_gather: rank {} sends {} elements but its count is {}",
                                            world.rank, send_size, counts[world.rank]));
  }
  if (recv_size != offsets[world.size]) {
    throw std::invalid_argument(fmt::format("all_gather: receive buffer holds {} elements, counts sum to {}",
                                            recv_size, offsets[world.size]));
  }
  return offsets;
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& control, int device) : control_(control), device_(device) {
  const World& world = control_.world();
  // A setup error on some ranks fails every rank (check_all), so none waits in ncclCommInitRank.
  std::string error = cuda_error_text(cudaSetDevice(device), fmt::format("cudaSetDevice({})", device));
  if (error.empty()) {
    error = cuda_error_text(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ncclUniqueId id{};
  if (error.empty() && world.is_coordinator()) {
    error = nccl_error_text(ncclGetUniqueId(&id), "ncclGetUniqueId");
  }
  if (!error.empty()) error = fmt::format("rank {}: {}", world.rank, error);
  try {
    check_all(control_, error.empty(), error);
    control_.broadcast_values(std::span<ncclUniqueId>(&id, 1), 0);
    check_nccl(ncclCommInitRank(&comm_, world.size, id, world.rank), "ncclCommInitRank");
  } catch (...) {
    release();
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (!name_.empty() && traffic_report_requested()) {
    std::fprintf(stderr, "kvshrink: comm-stats %s\n", traffic_json(traffic_, world(), name_).c_str());
  }
  release();
}

// A destructor cannot report errors; the process is ending the communicator anyway.
void NcclCommunicator::release() noexcept {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
  if (staging_ != nullptr) cudaFree(staging_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  comm_ = nullptr;
  staging_ = nullptr;
  stream_ = nullptr;
  staging_bytes_ = 0;
}

std::byte* NcclCommunicator::staging(size_t bytes) {
  if (comm_ == nullptr) throw std::runtime_error("NCCL communicator used after it was aborted on an error");
  if (bytes <= staging_bytes_) return staging_;
  if (staging_ != nullptr) check_cuda(cudaFree(staging_), "cudaFree");
  staging_ = nullptr;
  staging_bytes_ = 0;
  void* memory = nullptr;
  check_cuda(cudaMalloc(&memory, bytes), "cudaMalloc");
  staging_ = static_cast<std::byte*>(memory);
  staging_bytes_ = bytes;
  return staging_;
}

void NcclCommunicator::upload(const void* host, size_t bytes, size_t offset) {
  check_cuda(cudaMemcpyAsync(staging_ + offset, host, bytes, cudaMemcpyHostToDevice, stream_),
             "cudaMemcpyAsync");
}

// Call after wait(): a copy to pageable host memory blocks until the stream gets to it.
void NcclCommunicator::download(void* host, size_t bytes, size_t offset) {
  check_cuda(cudaMemcpyAsync(host, staging_ + offset, bytes, cudaMemcpyDeviceToHost, stream_),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

// Under the control plane's stall watchdog, which polls, answers pings and ends the job on a rank
// that stopped answering (comm/communicator.h).
void NcclCommunicator::wait(const char* call) {
  control_.wait_watched([&] {
    const cudaError_t status = cudaStreamQuery(stream_);
    if (status == cudaSuccess) return true;
    if (status != cudaErrorNotReady) throw std::runtime_error(cuda_error_text(status, call));
    ncclResult_t async_error = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &async_error), "ncclCommGetAsyncError");
    if (async_error != ncclSuccess) {
      const std::string text = nccl_error_text(async_error, call);
      ncclCommAbort(comm_);  // the communicator cannot be used again
      comm_ = nullptr;
      throw std::runtime_error(text);
    }
    return false;
  });
}

void NcclCommunicator::all_reduce(void* data, size_t count, size_t type_size, ncclDataType_t type,
                                  ncclRedOp_t op) {
  const size_t bytes = count * type_size;
  ++traffic_.all_reduce.calls;
  traffic_.all_reduce.bytes += bytes;
  if (count == 0) return;  // every rank passes the same count
  std::byte* buffer = staging(bytes);
  upload(data, bytes);
  check_nccl(ncclAllReduce(buffer, buffer, count, type, op, comm_, stream_), "ncclAllReduce");
  wait("ncclAllReduce");
  download(data, bytes);
}

void NcclCommunicator::all_reduce_sum(std::span<float> data) {
  all_reduce(data.data(), data.size(), sizeof(float), ncclFloat32, ncclSum);
}

void NcclCommunicator::all_reduce_max(std::span<int64_t> data) {
  all_reduce(data.data(), data.size(), sizeof(int64_t), ncclInt64, ncclMax);
}

void NcclCommunicator::all_gather(std::span<const float> send, std::span<float> recv,
                                  std::span<const int64_t> counts) {
  gather(send.data(), recv.data(), counts, send.size(), recv.size(), ncclFloat32, sizeof(float));
}

void NcclCommunicator::all_gather(std::span<const int64_t> send, std::span<int64_t> recv,
                                  std::span<const int64_t> counts) {
  gather(send.data(), recv.data(), counts, send.size(), recv.size(), ncclInt64, sizeof(int64_t));
}

// Unequal counts: one ncclBroadcast per rank, fused in a group, each root's part broadcast in place
// at its offset of the result. Simpler than ncclAllGather padded to the largest count (no padding
// to size, no compaction pass) and it moves no padding bytes; NCCL recommends it for allgatherv.
void NcclCommunicator::gather(const void* send, void* recv, std::span<const int64_t> counts, size_t send_size,
                              size_t recv_size, ncclDataType_t type, size_t type_size) {
  const World& w = world();
  const std::vector<size_t> offsets = gather_offsets(counts, w, send_size, recv_size);
  ++traffic_.all_gather.calls;
  traffic_.all_gather.bytes += recv_size * type_size;
  traffic_.all_gather_sent += send_size * type_size;
  if (recv_size == 0) return;
  std::byte* buffer = staging(recv_size * type_size);
  if (send_size > 0) upload(send, send_size * type_size, offsets[w.rank] * type_size);
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  ncclResult_t first_error = ncclSuccess;  // the group is ended whatever happens inside it
  for (int r = 0; r < w.size; ++r) {
    if (counts[r] == 0) continue;  // counts are identical on every rank
    std::byte* part = buffer + offsets[r] * type_size;
    const ncclResult_t result = ncclBroadcast(part, part, counts[r], type, r, comm_, stream_);
    if (first_error == ncclSuccess) first_error = result;
  }
  const ncclResult_t group_result = ncclGroupEnd();
  check_nccl(first_error, "ncclBroadcast");
  check_nccl(group_result, "ncclGroupEnd");
  wait("ncclBroadcast");
  download(recv, recv_size * type_size);
}

void NcclCommunicator::broadcast(std::span<std::byte> data, int root) {
  const World& w = world();
  if (root < 0 || root >= w.size) {
    throw std::invalid_argument(fmt::format("broadcast: root {} is not a rank of {}", root, w.size));
  }
  ++traffic_.broadcast.calls;
  traffic_.broadcast.bytes += data.size();
  if (root == w.rank) traffic_.broadcast_root_bytes += data.size();
  if (data.empty()) return;
  std::byte* buffer = staging(data.size());
  if (root == w.rank) upload(data.data(), data.size());
  check_nccl(ncclBroadcast(buffer, buffer, data.size(), ncclUint8, root, comm_, stream_), "ncclBroadcast");
  wait("ncclBroadcast");
  if (root != w.rank) download(data.data(), data.size());
}

void NcclCommunicator::barrier() {
  ++traffic_.barriers;
  control_.barrier();  // every NCCL call here has completed when it returns
}

void NcclCommunicator::abort(int exit_code, std::string_view message) {
  control_.abort(exit_code, message);
  std::abort();  // not reached (the virtual call's [[noreturn]] is not seen by the compiler)
}

std::unique_ptr<Communicator> NcclCommunicator::duplicate() const {
  return std::make_unique<NcclCommunicator>(control_, device_);
}

void NcclCommunicator::keep_alive() {
  control_.keep_alive();
}

}  // namespace kvshrink::comm
