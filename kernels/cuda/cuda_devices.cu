#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_devices.h"

namespace kvshrink::kernels::cuda {

std::vector<CudaDevice> cuda_devices(std::string* why_none) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  std::vector<CudaDevice> devices;
  if (status != cudaSuccess || count == 0) {
    if (why_none) *why_none = status != cudaSuccess ? cudaGetErrorString(status) : "no CUDA device";
    cudaGetLastError();  // clear the sticky error of a failed query
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, i) != cudaSuccess) continue;
    devices.push_back({i, props.name, props.major, props.minor, static_cast<uint64_t>(props.totalGlobalMem)});
  }
  return devices;
}

std::string compiled_architectures() {
  return KVSHRINK_CUDA_ARCHITECTURES;
}

}  // namespace kvshrink::kernels::cuda
