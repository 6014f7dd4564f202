#include "launch/info_command.h"

#include <cstdio>

#include "comm/communicator.h"
#include "kernels/devices.h"

namespace kvshrink::launch {

CLI::App* add_info_command(CLI::App& app) {
  return app.add_subcommand("info", "Print the compute devices this build can use");
}

int run_info(comm::Communicator& control) {
  if (!control.world().is_coordinator()) return 0;
  for (const auto& line : kernels::device_lines()) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace kvshrink::launch
