// Which data plane a GPU rank uses (comm/planes.h, make_planes_for_cuda), decided from the node
// alone: NCCL needs one GPU per rank, so when a node runs more ranks than it has GPUs the ranks
// share them and the data plane falls back to MPI over host buffers, with a one-line notice:
//
//   kvshrink: notice: 2 ranks share 1 GPU on this node; the data plane uses MPI over host buffers
//   (NCCL needs one GPU per rank)
//
// Pure: no CUDA, NCCL or MPI. The job must agree on the choice (every rank falls back if any node
// must); make_planes_for_cuda does that.
#pragma once

#include <string>
#include <string_view>

namespace kvshrink::comm {

struct DataPlaneChoice {
  bool nccl = false;   // NCCL (one GPU per rank on this node); false: MPI over host buffers
  int device = 0;      // this rank's CUDA device index
  std::string notice;  // the fallback's notice line (no newline); empty when nccl or error
  std::string error;   // not empty: the node has no CUDA device, nothing else is set
};

// The choice for the rank local_rank of the local_size ranks on a node with cuda_devices GPUs:
// NCCL with device local_rank when local_size <= cuda_devices; otherwise MPI, device
// local_rank % cuda_devices. Throws std::invalid_argument unless 0 <= local_rank < local_size and
// cuda_devices >= 0.
DataPlaneChoice choose_data_plane(int local_rank, int local_size, int cuda_devices);

// The fallback's notice, "kvshrink: notice: 2 ranks share 1 GPU on <node>; ...", node e.g.
// "this node" or "the node of rank 3".
std::string data_plane_notice(int local_size, int cuda_devices, std::string_view node);

}  // namespace kvshrink::comm
