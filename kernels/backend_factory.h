// The one place that turns a device name into a compute backend, so nothing above kernels/ names a
// backend class.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/backend.h"

namespace kvshrink::kernels {

struct BackendOptions {
  MatmulActivations matmul_activations = MatmulActivations::kF32;  // --matmul-activations (cpu only)
  std::string device = "cpu";        // --device: "cpu" or "cuda" (kernels/devices.h: default_device())
  int node_local_rank = 0;           // the CUDA backend runs on device node_local_rank % devices on the node
  KvDtype kv_dtype = KvDtype::kF16;  // --kv-dtype: the element type of the KV cache attention reads
};

// A backend for options.device: "cpu" (host memory, OpenBLAS and the compute threads) or, in a
// build with the CUDA backend, "cuda" (kernels/cuda/cuda_backend.h). Throws std::invalid_argument
// naming the devices there are for any other name, or for q8 activations on cuda, and
// std::runtime_error when the CUDA device cannot be used.
std::unique_ptr<Backend> make_backend(const BackendOptions& options);
// make_backend({.device = device}): f32 activations.
std::unique_ptr<Backend> make_backend(std::string_view device);

// The --device names this build has: "cpu", and "cuda" when built with the CUDA backend.
std::vector<std::string> device_names();

// --matmul-activations names, one table: "f32", "q8".
std::vector<std::string> matmul_activation_names();
// Throws std::invalid_argument naming the known names.
MatmulActivations matmul_activations_from_name(std::string_view name);

}  // namespace kvshrink::kernels
