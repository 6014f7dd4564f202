#include "kernels/tensor_type.h"

#include <array>

#include "kernels/cpu/dequantize.h"

namespace kvshrink::kernels {
namespace {

constexpr std::array<TensorTypeInfo, 8> kTypes{{
    {TensorType::F32, "F32", 1, 4},
    {TensorType::F16, "F16", 1, 2},
    {TensorType::Q4_0, "Q4_0", 32, 18},
    {TensorType::Q4_1, "Q4_1", 32, 20},
    {TensorType::Q8_0, "Q8_0", 32, 34},
    {TensorType::Q4_K, "Q4_K", 256, 144},
    {TensorType::Q6_K, "Q6_K", 256, 210},
    {TensorType::BF16, "BF16", 1, 2},
}};

}  // namespace

std::optional<TensorTypeInfo> tensor_type_info(uint32_t type_id) {
  for (const auto& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == type_id) return info;
  }
  return std::nullopt;
}

const TensorTypeInfo& tensor_type_info(TensorType type) {
  for (const auto& info : kTypes) {
    if (info.type == type) return info;
  }
  return kTypes[0];  // unreachable for a valid enum value
}

void dequantize_row_to_f32(TensorType type, const void* src, float* dst, int64_t n) {
  cpu::dequantize_row(type, src, dst, n);
}

}  // namespace kvshrink::kernels
