// make_planes_for_cuda (comm/planes.h) in the CUDA build; comm/planes_without_cuda.cpp otherwise.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "comm/collective_error.h"
#include "comm/data_plane_choice.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/planes.h"

namespace kvshrink::comm {
namespace {

// Every rank makes its GPU current; a failure anywhere fails every rank alike.
void select_device(Communicator& control, int device) {
  const cudaError_t status = cudaSetDevice(device);
  check_all(control, status == cudaSuccess,
            fmt::format("rank {}: cudaSetDevice({}): {}", control.world().rank, device,
                        cudaGetErrorString(status)));
}

// Rank 0 prints the notice of the lowest rank whose node must fall back (`votes[r]` = 1), naming
// that node by its ranks and GPUs.
void print_fallback_notice(Communicator& control, const std::vector<int64_t>& votes, int cuda_devices) {
  const int reporter = static_cast<int>(std::find(votes.begin(), votes.end(), 1) - votes.begin());
  std::array<int64_t, 2> node = {control.world().local_size, cuda_devices};  // ranks, GPUs
  control.broadcast_values(std::span<int64_t>(node), reporter);
  if (!control.world().is_coordinator()) return;
  const std::string where = reporter == 0 ? "this node" : fmt::format("the node of rank {}", reporter);
  const std::string notice = data_plane_notice(static_cast<int>(node[0]), static_cast<int>(node[1]), where);
  std::fprintf(stderr, "%s\n", notice.c_str());
}

}  // namespace

void make_planes_for_cuda(Planes& planes, int cuda_devices) {
  Communicator& control = *planes.control;
  const World& world = control.world();
  const DataPlaneChoice choice = choose_data_plane(world.local_rank, world.local_size, cuda_devices);
  check_all(control, choice.error.empty(), fmt::format("rank {}: {}", world.rank, choice.error));
  select_device(control, choice.device);

  // The job agrees: one vote per rank (1 = its node must fall back), seen by every rank.
  const std::vector<int64_t> votes = control.all_gather_value(choice.nccl ? 0 : 1);
  if (std::find(votes.begin(), votes.end(), 1) != votes.end()) {
    print_fallback_notice(control, votes, cuda_devices);
    return;
  }
  auto data = std::make_unique<NcclCommunicator>(control, choice.device);
  data->set_name("data");
  // The MPI data plane it replaces carried nothing: unnamed, it prints no traffic (comm/traffic.h).
  if (auto* mpi_data = dynamic_cast<MpiCommunicator*>(planes.data.get())) mpi_data->set_name("");
  planes.data = std::move(data);
}

}  // namespace kvshrink::comm
