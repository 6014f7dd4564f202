// The decode matmul of packed weights on the device: y[m x rows] = x[m x cols] . w^T for a few
// activation rows (m <= kGemvMaxRows: decode steps), the weights read once in their GGUF packing
// (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) and dequantized in registers, f32 activations and
// sums. One warp per weight row; lane l takes the row's 32-element blocks (K-quants: 32-element
// sub-blocks; plain types: elements) l, l + 32, ...; a warp reduction per activation row.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels::cuda {

constexpr int64_t kGemvMaxRows = 8;

// Whether packed_gemv takes weights of this type.
bool packed_gemv_supports(TensorType type);

// w: rows packed rows of `type`, each cols / block_elements blocks, contiguous (device memory); x
// [m x cols] and y [m x rows] row-major in device memory. Throws std::invalid_argument for an
// unsupported type, m outside 1..kGemvMaxRows or cols not a whole number of the type's blocks (32
// elements; 256 for Q4_K / Q6_K; 1 for F32 / F16 / BF16); std::runtime_error if the launch fails.
void packed_gemv(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t m,
                 float* y, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
