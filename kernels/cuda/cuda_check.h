// CUDA runtime calls that throw std::runtime_error naming the call and the runtime's message.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace kvshrink::kernels::cuda {

inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(status));
}

}  // namespace kvshrink::kernels::cuda

#define KVSHRINK_CUDA_CHECK(call) ::kvshrink::kernels::cuda::check((call), #call)
