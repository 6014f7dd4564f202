// `kvshrink info`: what this build can compute on (the host CPU, the CUDA devices found or why
// there are none, kernels/devices.h), printed by rank 0.
#pragma once

#include <CLI/CLI.hpp>

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

CLI::App* add_info_command(CLI::App& app);
int run_info(comm::Communicator& control);

}  // namespace kvshrink::launch
