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

// dst[0..n) = the n elements of a row of `type` in host memory (e.g. a GGUF file's tensor data),
// decoded to float32: the host-side format decoding of weight loading. n must be a whole number of
// blocks; throws std::invalid_argument otherwise. src aligned to 2 bytes (4 for F32).
void dequantize_row_to_f32(TensorType type, const void* src, float* dst, int64_t n);

}  // namespace kvshrink::kernels
