// GGML tensor element types (ids as in ggml.h / GGUF tensor-info records) and their block geometry.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kvshrink::kernels {

// Only the types kvshrink can dequantize; other ids are rejected by the GGUF reader.
enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  BF16 = 30,
};

// A tensor row of ne0 elements is (ne0 / block_elements) blocks of block_bytes each.
struct TensorTypeInfo {
  TensorType type;
  std::string_view name;
  uint64_t block_elements;
  uint64_t block_bytes;
};

// Geometry of a supported type id; nullopt for an unknown or unsupported id.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t type_id);
const TensorTypeInfo& tensor_type_info(TensorType type);

}  // namespace kvshrink::kernels
