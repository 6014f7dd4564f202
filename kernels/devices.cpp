#include "kernels/devices.h"

#include <fmt/format.h>

#include <fstream>
#include <thread>

#if defined(KVSHRINK_HAVE_CUDA)
#include "kernels/cuda/cuda_devices.h"
#endif

namespace kvshrink::kernels {
namespace {

std::string cpu_model() {  // /proc/cpuinfo's first "model name", else "cpu"
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
  }
  return "cpu";
}

std::string simd_level() {
  if (__builtin_cpu_supports("avx512f")) return "AVX-512";
  if (__builtin_cpu_supports("avx2")) return "AVX2";
  return "no AVX2";
}

}  // namespace

bool cuda_built() {
#if defined(KVSHRINK_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#if defined(KVSHRINK_HAVE_CUDA)
  std::string why_none;
  return static_cast<int>(cuda::cuda_devices(&why_none).size());
#else
  return 0;
#endif
}

std::string default_device() {
  return cuda_device_count() > 0 ? "cuda" : "cpu";
}

std::vector<std::string> device_lines() {
  std::vector<std::string> lines{fmt::format("cpu: {}, {} hardware threads, {}", cpu_model(),
                                             std::thread::hardware_concurrency(), simd_level())};
#if defined(KVSHRINK_HAVE_CUDA)
  std::string why_none;
  const auto devices = cuda::cuda_devices(&why_none);
  if (devices.empty()) {
    lines.push_back(
        fmt::format("cuda: built for sm {}; no device ({})", cuda::compiled_architectures(), why_none));
  }
  for (const auto& d : devices) {
    lines.push_back(fmt::format("cuda:{} {}, sm {}.{}, {:.1f} GiB", d.index, d.name, d.major, d.minor,
                                static_cast<double>(d.total_memory) / (1u << 30)));
  }
#else
  lines.emplace_back("cuda: not built (no nvcc at configure time, or -DKVSHRINK_CUDA=OFF)");
#endif
  return lines;
}

}  // namespace kvshrink::kernels
