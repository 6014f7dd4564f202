// Packed weights and f32 activations converted to f16 on the device, the inputs of the prefill
// GEMM (cuBLAS, f16 operands, f32 accumulation). Each returns once the kernel is queued and throws
// std::runtime_error if the launch fails.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels::cuda {

// Whether dequantize_to_f16 takes weights of this type.
bool dequantize_to_f16_supports(TensorType type);

// out[rows x cols] (f16, row-major, device memory) = w dequantized: rows packed rows of `type`
// (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), each cols / block_elements blocks, contiguous in
// device memory; decoded to f32 as the CPU does, then rounded to nearest even (beyond +-65504:
// inf). Throws std::invalid_argument for another type or cols not a whole number of the type's
// blocks (32 elements; 256 for Q4_K / Q6_K; 1 for F32 / F16 / BF16).
void dequantize_to_f16(TensorType type, const void* w, int64_t rows, int64_t cols, __half* out,
                       cudaStream_t stream);

// out[0..count) = x[0..count) rounded to f16 (nearest even), device memory.
void f32_to_f16(const float* x, __half* out, int64_t count, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
