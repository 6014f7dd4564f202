// The one place that turns a device name into a compute backend, so nothing above kernels/ names a
// backend class.
#pragma once

#include <memory>
#include <string_view>

#include "kernels/backend.h"

namespace kvshrink::kernels {

// A backend for `device`: "cpu" (host memory, OpenBLAS and the compute threads). Throws
// std::invalid_argument naming the devices there are for any other name.
std::unique_ptr<Backend> make_backend(std::string_view device);

}  // namespace kvshrink::kernels
