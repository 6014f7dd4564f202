// Runs the kvshrink executable (alone or under mpirun) from a test and captures its output.
// KVSHRINK_BINARY and KVSHRINK_MPIRUN are compiled in by tests/CMakeLists.txt.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kvshrink::testing {

struct RunResult {
  int exit_code;       // 124: killed by the timeout (a hang)
  std::string output;  // stdout + stderr
};

// Runs a shell command with a timeout; root may run mpirun, and ranks use one thread each.
inline RunResult run_command(const std::string& command, int timeout_seconds = 300) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
  const std::string full = "timeout " + std::to_string(timeout_seconds) + " " + command + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed");
  std::string output;
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) output += buffer.data();
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, output};
}

// "mpirun --oversubscribe -np N <kvshrink>"
inline std::string mpirun_kvshrink(int np) {
  return std::string(KVSHRINK_MPIRUN) + " --oversubscribe -np " + std::to_string(np) + " " + KVSHRINK_BINARY;
}

inline size_t count_occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace kvshrink::testing
