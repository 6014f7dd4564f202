// The element type of the K/V rows (and low-rank coefficients) the KV store holds and the
// attention kernels read: 16-bit IEEE half (the default, what "full KV" is measured in) or f32.
// Kernels accumulate in f32 whatever the storage.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvshrink::kernels {

enum class KvDtype : uint8_t { kF16, kF32 };

inline constexpr int64_t kv_dtype_bytes(KvDtype dtype) {
  return dtype == KvDtype::kF16 ? 2 : 4;
}

// "f16", "f32"; from_name throws std::invalid_argument naming the dtypes there are.
std::string kv_dtype_name(KvDtype dtype);
KvDtype kv_dtype_from_name(const std::string& name);
std::vector<std::string> kv_dtype_names();

}  // namespace kvshrink::kernels
