// The CUDA devices this process sees, for `kvshrink info` and for choosing a rank's GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvshrink::kernels::cuda {

struct CudaDevice {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;   // compute capability
  uint64_t total_memory = 0;  // bytes
};

// Every device, in CUDA's order; empty when there is none, with *why_none saying why (no driver,
// no device, ...). Creates no context.
std::vector<CudaDevice> cuda_devices(std::string* why_none);

// The architectures this build's kernels were compiled for (CMAKE_CUDA_ARCHITECTURES), e.g. "90,80".
std::string compiled_architectures();

}  // namespace kvshrink::kernels::cuda
