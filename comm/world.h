// Where this process sits in the job: one small value type (cf. TensorRT-LLM worldConfig.h).
#pragma once

namespace kvshrink::comm {

struct World {
  int rank = 0;        // global rank, 0 = coordinator
  int size = 1;        // number of ranks = tensor-parallel size
  int local_rank = 0;  // rank among the processes on this node (selects the GPU)
  int local_size = 1;  // processes on this node (divides the CPU cores)

  bool is_coordinator() const { return rank == 0; }
};

}  // namespace kvshrink::comm
