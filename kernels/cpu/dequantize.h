// Dequantization of GGML-packed rows to float32 (layouts: ggml-common.h; block structs in
// kernels/cpu/quant_blocks.h with static_asserts on their sizes).
#pragma once

#include <cstdint>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels::cpu {

// dst[0..n) = dequantized elements of src. n must be a multiple of the type's block_elements;
// src holds n / block_elements blocks. Throws std::invalid_argument otherwise. src must be aligned to
// 2 bytes (4 for F32); GGUF tensor data always is (8 or more).
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

// Half-precision helpers (IEEE binary16 and bfloat16), exact including subnormals.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
float bf16_to_fp32(uint16_t b);

}  // namespace kvshrink::kernels::cpu
