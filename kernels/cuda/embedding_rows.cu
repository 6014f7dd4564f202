#include <cuda_fp16.h>

#include <stdexcept>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding_rows.h"
#include "kernels/cuda/quant_blocks.cuh"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // per token row

// One thread block per token; thread k writes elements k, k + kThreads, ... (one block of 32 each
// for the packed types).
template <class Block>
__global__ void packed_rows_kernel(const Block* table, int64_t blocks, const int32_t* tokens, float* out) {
  const Block* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * blocks;
  float* dst = out + blockIdx.x * blocks * kQuantBlock;
  for (int64_t b = threadIdx.x; b < blocks; b += kThreads) {
    float w[kQuantBlock];
    dequantize(row[b], w);
    for (int j = 0; j < kQuantBlock; ++j) dst[b * kQuantBlock + j] = w[j];
  }
}

__global__ void f16_rows_kernel(const uint16_t* table, int64_t cols, const int32_t* tokens, float* out) {
  const uint16_t* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * cols;
  for (int64_t k = threadIdx.x; k < cols; k += kThreads)
    out[blockIdx.x * cols + k] = half_bits_to_float(row[k]);
}

__global__ void f32_rows_kernel(const float* table, int64_t cols, const int32_t* tokens, float* out) {
  const float* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * cols;
  for (int64_t k = threadIdx.x; k < cols; k += kThreads) out[blockIdx.x * cols + k] = row[k];
}

}  // namespace

bool embedding_rows_supports(TensorType type) {
  return type == TensorType::F32 || type == TensorType::F16 || type == TensorType::Q4_1 ||
         type == TensorType::Q8_0;
}

void embedding_rows(TensorType type, const void* table, int64_t cols, const int32_t* tokens, int64_t n,
                    float* out, cudaStream_t stream) {
  if (!embedding_rows_supports(type)) {
    throw std::invalid_argument("cuda embedding_rows: tables must be F32, F16, Q4_1 or Q8_0");
  }
  const bool packed = type == TensorType::Q4_1 || type == TensorType::Q8_0;
  if (packed && cols % kQuantBlock != 0) {
    throw std::invalid_argument("cuda embedding_rows: columns not whole 32-element blocks");
  }
  if (n == 0) return;
  const auto grid = static_cast<unsigned>(n);
  if (type == TensorType::Q4_1) {
    packed_rows_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const BlockQ4_1*>(table),
                                                      cols / kQuantBlock, tokens, out);
  } else if (type == TensorType::Q8_0) {
    packed_rows_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const BlockQ8_0*>(table),
                                                      cols / kQuantBlock, tokens, out);
  } else if (type == TensorType::F16) {
    f16_rows_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint16_t*>(table), cols, tokens, out);
  } else {
    f32_rows_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(table), cols, tokens, out);
  }
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
