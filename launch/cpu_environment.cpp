#include "launch/cpu_environment.h"

#include <cblas.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace kvshrink::launch {
namespace {

// CPUs in this process's affinity mask (hardware threads if the mask cannot be read).
int usable_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) {
    return static_cast<int>(std::thread::hardware_concurrency());
  }
  return CPU_COUNT(&mask);
}

}  // namespace

void reexec_with_openblas_coretype(int argc, char** argv) {
  if (argc < 1 || std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (!__builtin_cpu_supports("avx512f")) return;
  if (setenv("OPENBLAS_CORETYPE", "SkylakeX", /*overwrite=*/1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: keep OpenBLAS's own choice
}

void set_compute_threads(const comm::World& world) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr || std::getenv("OMP_NUM_THREADS") != nullptr) return;
  int per_rank = static_cast<int>(std::thread::hardware_concurrency()) / std::max(1, world.local_size);
  int threads = std::max(1, std::min(per_rank, usable_cpus()));
  openblas_set_num_threads(threads);
}

int compute_threads() {
  return openblas_get_num_threads();
}

}  // namespace kvshrink::launch
