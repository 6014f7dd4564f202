// What this build can compute on, in lines for `kvshrink info`: the host CPU, and the CUDA devices
// found when the CUDA backend is built (KVSHRINK_CUDA), or why there are none. Needs no CUDA header.
#pragma once

#include <string>
#include <vector>

namespace kvshrink::kernels {

// e.g. {"cpu: AMD EPYC, 2 threads, AVX-512", "cuda: built for sm 90,80; no device (no CUDA-capable
// device is detected)"} or {..., "cuda:0 NVIDIA H200, sm 9.0, 139.8 GiB"}
std::vector<std::string> device_lines();

// Whether this build has the CUDA backend's kernels.
bool cuda_built();

// CUDA devices this process sees (0 in a build without the CUDA backend or without a device).
int cuda_device_count();

// The --device default: "cuda" when this build has the CUDA backend and a device is present, else "cpu".
std::string default_device();

}  // namespace kvshrink::kernels
