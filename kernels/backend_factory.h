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
  MatmulActivations matmul_activations = MatmulActivations::kF32;
};

// A backend for `device`: "cpu" (host memory, OpenBLAS and the compute threads). Throws
// std::invalid_argument naming the devices there are for any other name.
std::unique_ptr<Backend> make_backend(std::string_view device, const BackendOptions& options);
// make_backend(device, {}): f32 activations.
std::unique_ptr<Backend> make_backend(std::string_view device);

// --matmul-activations names, one table: "f32", "q8".
std::vector<std::string> matmul_activation_names();
// Throws std::invalid_argument naming the known names.
MatmulActivations matmul_activations_from_name(std::string_view name);

}  // namespace kvshrink::kernels
