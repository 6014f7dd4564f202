#include "launch/output_path.h"

#include <fmt/format.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "comm/collective_error.h"
#include "comm/communicator.h"

namespace kvshrink::launch {
namespace {

namespace fs = std::filesystem;

// Why a file cannot be written at path; "" when it can.
std::string why_not_writable(const fs::path& path) {
  std::error_code ec;
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (fs::is_directory(path, ec)) return "it is a folder";
  if (!fs::is_directory(folder, ec)) return fmt::format("the folder '{}' does not exist", folder.string());
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    return fmt::format("the folder '{}' is not writable", folder.string());
  if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0) return "the file is not writable";
  return "";
}

}  // namespace

void check_output_file(const fs::path& path) {
  const std::string why = why_not_writable(path);
  if (!why.empty()) throw std::runtime_error(fmt::format("cannot write '{}': {}", path.string(), why));
}

void check_output_file(const fs::path& path, comm::Communicator& comm) {
  std::string error;
  if (comm.world().is_coordinator()) {
    try {
      check_output_file(path);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
}

}  // namespace kvshrink::launch
