#include "comm/data_plane_choice.h"

#include <fmt/format.h>

#include <stdexcept>

namespace kvshrink::comm {

DataPlaneChoice choose_data_plane(int local_rank, int local_size, int cuda_devices) {
  if (local_size < 1 || local_rank < 0 || local_rank >= local_size) {
    throw std::invalid_argument(
        fmt::format("choose_data_plane: local rank {} of {} ranks on the node", local_rank, local_size));
  }
  if (cuda_devices < 0) {
    throw std::invalid_argument(fmt::format("choose_data_plane: {} CUDA devices", cuda_devices));
  }
  DataPlaneChoice choice;
  if (cuda_devices == 0) {
    choice.error = fmt::format("the CUDA backend found no CUDA device on this node ({} rank{} here)",
                               local_size, local_size == 1 ? "" : "s");
    return choice;
  }
  choice.nccl = local_size <= cuda_devices;
  // == local_rank with one GPU per rank; kernels/cuda/cuda_backend.h picks the same device
  choice.device = local_rank % cuda_devices;
  if (!choice.nccl) choice.notice = data_plane_notice(local_size, cuda_devices, "this node");
  return choice;
}

std::string data_plane_notice(int local_size, int cuda_devices, std::string_view node) {
  return fmt::format(
      "kvshrink: notice: {} ranks share {} GPU{} on {}; the data plane uses MPI over host buffers "
      "(NCCL needs one GPU per rank)",
      local_size, cuda_devices, cuda_devices == 1 ? "" : "s", node);
}

}  // namespace kvshrink::comm
