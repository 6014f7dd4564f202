#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/packed_gemv.h"
#include "kernels/cuda/quant_blocks.cuh"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kBlock = kQuantBlock;
constexpr int kWarpsPerCta = 8;  // weight rows per thread block

template <class Block, int kM>
__global__ void gemv_kernel(const Block* w, int64_t rows, int64_t blocks, const float* x, float* y) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerCta) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t cols = blocks * kBlock;
  float sums[kM] = {};
  for (int64_t b = lane; b < blocks; b += 32) {
    float weights[kBlock];
    dequantize(w[row * blocks + b], weights);
    for (int t = 0; t < kM; ++t) {
      const float* xb = x + t * cols + b * kBlock;
      for (int j = 0; j < kBlock; ++j) sums[t] += weights[j] * xb[j];
    }
  }
  for (int t = 0; t < kM; ++t) {
    for (int offset = 16; offset > 0; offset /= 2) sums[t] += __shfl_down_sync(0xffffffffu, sums[t], offset);
    if (lane == 0) y[t * rows + row] = sums[t];
  }
}

// gemv_kernel<Block, kM> for a run-time m in 1..kM
template <class Block, int kM>
void launch(const Block* w, int64_t rows, int64_t blocks, const float* x, int64_t m, float* y,
            cudaStream_t stream) {
  if constexpr (kM > 1) {
    if (m < kM) return launch<Block, kM - 1>(w, rows, blocks, x, m, y, stream);
  }
  const auto grid = static_cast<unsigned>((rows + kWarpsPerCta - 1) / kWarpsPerCta);
  gemv_kernel<Block, kM><<<grid, kWarpsPerCta * 32, 0, stream>>>(w, rows, blocks, x, y);
}

}  // namespace

bool packed_gemv_supports(TensorType type) {
  return type == TensorType::Q4_1 || type == TensorType::Q8_0;
}

void packed_gemv(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t m,
                 float* y, cudaStream_t stream) {
  if (!packed_gemv_supports(type))
    throw std::invalid_argument("cuda packed_gemv: weights must be Q4_1 or Q8_0");
  if (m < 1 || m > kGemvMaxRows) {
    throw std::invalid_argument("cuda packed_gemv: " + std::to_string(m) + " activation rows (1.." +
                                std::to_string(kGemvMaxRows) + ")");
  }
  if (cols % kBlock != 0)
    throw std::invalid_argument("cuda packed_gemv: columns not whole 32-element blocks");
  if (rows == 0) return;
  const int64_t blocks = cols / kBlock;
  if (type == TensorType::Q4_1) {
    launch<BlockQ4_1, kGemvMaxRows>(static_cast<const BlockQ4_1*>(w), rows, blocks, x, m, y, stream);
  } else {
    launch<BlockQ8_0, kGemvMaxRows>(static_cast<const BlockQ8_0*>(w), rows, blocks, x, m, y, stream);
  }
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
