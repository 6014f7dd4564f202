// Rows of a packed embedding table dequantized on the device: Backend::embedding_rows
// (kernels/backend.h) for F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K tables in device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels::cuda {

bool embedding_rows_supports(TensorType type);

// out[n x cols] = rows tokens[0..n) of `table` (rows x cols of `type`, rows contiguous), as f32.
// tokens must be in [0, rows) (the caller checks ids against the vocabulary). Throws
// std::invalid_argument for another type or cols not whole blocks (32 elements; 256 for Q4_K /
// Q6_K).
void embedding_rows(TensorType type, const void* table, int64_t cols, const int32_t* tokens, int64_t n,
                    float* out, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
