// The engine's two communicators (DESIGN.md section 3): the control plane carries step messages,
// error agreement (check_all) and plans, and is always MPI; the data plane carries the activation
// all-reduces and the logit and score gathers (MPI on CPU; NCCL on GPU later). They are separate
// communicators, so a message of one plane can never match a receive or collective of the other.
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

}  // namespace kvshrink::comm
