// make_planes_for_cuda in a build without the CUDA backend (KVSHRINK_CUDA=OFF); the CUDA build
// compiles comm/nccl_planes.cpp instead.
#include <stdexcept>

#include "comm/planes.h"

namespace kvshrink::comm {

void make_planes_for_cuda(Planes&, int) {
  throw std::runtime_error("this build has no CUDA backend");
}

}  // namespace kvshrink::comm
