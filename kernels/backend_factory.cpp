#include "kernels/backend_factory.h"

#include <array>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"

namespace kvshrink::kernels {
namespace {

struct BackendEntry {
  std::string_view device;
  std::unique_ptr<Backend> (*make)();
};

constexpr std::array<BackendEntry, 1> kBackends{{
    {"cpu", []() -> std::unique_ptr<Backend> { return std::make_unique<cpu::CpuBackend>(); }},
}};

}  // namespace

std::unique_ptr<Backend> make_backend(std::string_view device) {
  std::string known;
  for (const auto& entry : kBackends) {
    if (entry.device == device) return entry.make();
    known += (known.empty() ? "" : ", ") + std::string(entry.device);
  }
  throw std::invalid_argument("unknown compute device '" + std::string(device) + "' (available: " + known +
                              ")");
}

}  // namespace kvshrink::kernels
