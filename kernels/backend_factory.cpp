#include "kernels/backend_factory.h"

#include <array>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"

namespace kvshrink::kernels {
namespace {

struct BackendEntry {
  std::string_view device;
  std::unique_ptr<Backend> (*make)(const BackendOptions&);
};

constexpr std::array<BackendEntry, 1> kBackends{{
    {"cpu",
     [](const BackendOptions& o) -> std::unique_ptr<Backend> {
       return std::make_unique<cpu::CpuBackend>(o.matmul_activations);
     }},
}};

struct ActivationsEntry {
  std::string_view name;
  MatmulActivations activations;
};

constexpr std::array<ActivationsEntry, 2> kActivations{{
    {"f32", MatmulActivations::kF32},
    {"q8", MatmulActivations::kQ8},
}};

}  // namespace

std::unique_ptr<Backend> make_backend(std::string_view device, const BackendOptions& options) {
  std::string known;
  for (const auto& entry : kBackends) {
    if (entry.device == device) return entry.make(options);
    known += (known.empty() ? "" : ", ") + std::string(entry.device);
  }
  throw std::invalid_argument("unknown compute device '" + std::string(device) + "' (available: " + known +
                              ")");
}

std::unique_ptr<Backend> make_backend(std::string_view device) {
  return make_backend(device, BackendOptions{});
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
