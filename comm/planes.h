// The engine's two communicators (DESIGN.md section 3): the control plane carries step messages,
// error agreement (check_all) and plans, and is always MPI; the data plane carries the activation
// all-reduces and the logit and score gathers (MPI on CPU; NCCL with the CUDA backend, one GPU per
// rank: comm/nccl_communicator.h). They are separate communicators, so a message of one plane can
// never match a receive or collective of the other.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace kvshrink::comm {

struct Planes {
  // Declared first, destroyed last: it owns MPI, which ends with it.
  std::unique_ptr<Communicator> control;
  std::unique_ptr<Communicator> data;
};

// Initialises MPI as make_mpi_communicator does; the data plane is a duplicate of the control
// plane (MPI_Comm_dup).
Planes make_mpi_planes(int* argc, char*** argv);

// Collective, for the CUDA backend, in place on make_mpi_planes' planes, given this node's CUDA
// device count (every rank passes its own). Each rank's GPU is chosen by its node-local rank
// (comm/data_plane_choice.h) and made the calling thread's current CUDA device. If every node has
// a GPU per rank, planes.data becomes an NcclCommunicator on that GPU; if any node has more ranks
// than GPUs, every rank keeps the MPI data plane and rank 0 prints the fallback's notice once to
// stderr. A node without a device fails every rank with comm::JobError (the lowest such rank's
// message). On an exception the planes are as they were. A build without CUDA throws
// std::runtime_error("this build has no CUDA backend").
void make_planes_for_cuda(Planes& planes, int cuda_devices);

}  // namespace kvshrink::comm
