#include "kernels/backend_factory.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#if defined(KVSHRINK_HAVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
#endif

namespace kvshrink::kernels {
namespace {

struct BackendEntry {
  std::string_view device;
  std::unique_ptr<Backend> (*make)(const BackendOptions&);
};

std::unique_ptr<Backend> make_cpu(const BackendOptions& o) {
  return std::make_unique<cpu::CpuBackend>(o.matmul_activations);
}

#if defined(KVSHRINK_HAVE_CUDA)
std::unique_ptr<Backend> make_cuda(const BackendOptions& o) {
  if (o.matmul_activations != MatmulActivations::kF32) {
    throw std::invalid_argument(
        "--matmul-activations q8 is an option of --device cpu (cuda multiplies f32 "
        "rows in its GEMV and f16 rows in cuBLAS)");
  }
  return std::make_unique<cuda::CudaBackend>(o.node_local_rank);
}

constexpr std::array<BackendEntry, 2> kBackends{{{"cpu", make_cpu}, {"cuda", make_cuda}}};
#else
constexpr std::array<BackendEntry, 1> kBackends{{{"cpu", make_cpu}}};
#endif

struct ActivationsEntry {
  std::string_view name;
  MatmulActivations activations;
};

constexpr std::array<ActivationsEntry, 2> kActivations{{
    {"f32", MatmulActivations::kF32},
    {"q8", MatmulActivations::kQ8},
}};

}  // namespace

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  for (const auto& entry : kBackends) {
    if (entry.device == options.device) return entry.make(options);
  }
  const std::string why = options.device == "cuda" ? "this build has no CUDA backend; " : "";
  throw std::invalid_argument("unknown compute device '" + options.device + "' (" + why +
                              "available: " + fmt::format("{}", fmt::join(device_names(), ", ")) + ")");
}

std::unique_ptr<Backend> make_backend(std::string_view device) {
  BackendOptions options;
  options.device = std::string(device);
  return make_backend(options);
}

std::vector<std::string> device_names() {
  std::vector<std::string> names;
  for (const auto& entry : kBackends) names.emplace_back(entry.device);
  return names;
}

std::vector<std::string> matmul_activation_names() {
  std::vector<std::string> names;
  for (const auto& entry : kActivations) names.emplace_back(entry.name);
  return names;
}

MatmulActivations matmul_activations_from_name(std::string_view name) {
  std::string known;
  for (const auto& entry : kActivations) {
    if (entry.name == name) return entry.activations;
    known += (known.empty() ? "" : ", ") + std::string(entry.name);
  }
  throw std::invalid_argument("unknown matmul activations '" + std::string(name) + "' (available: " + known +
                              ")");
}

}  // namespace kvshrink::kernels
