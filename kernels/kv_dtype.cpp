#include "kernels/kv_dtype.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace kvshrink::kernels {

std::string kv_dtype_name(KvDtype dtype) {
  return dtype == KvDtype::kF16 ? "f16" : "f32";
}

KvDtype kv_dtype_from_name(const std::string& name) {
  if (name == "f16") return KvDtype::kF16;
  if (name == "f32") return KvDtype::kF32;
  if (name == "q8" || name == "q4" || name == "q2") {
    throw std::invalid_argument(
        fmt::format("KV dtype '{}': quantized KV segments are not built yet (this build has: {})", name,
                    fmt::join(kv_dtype_names(), ", ")));
  }
  throw std::invalid_argument(
      fmt::format("unknown KV dtype '{}' (this build has: {})", name, fmt::join(kv_dtype_names(), ", ")));
}

std::vector<std::string> kv_dtype_names() {
  return {"f16", "f32"};
}

}  // namespace kvshrink::kernels
