#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/packed_gemv.h"
#include "kernels/cuda/quant_blocks.cuh"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kWarpsPerCta = 8;  // weight rows per thread block

// One warp per weight row (row_bytes apart in w); lane l takes the row's decoder chunks l, l + 32, ...
template <class Decoder, int kM>
__global__ void gemv_kernel(const char* w, int64_t row_bytes, int64_t rows, int64_t cols, const float* x,
                            float* y) {
  constexpr int kChunk = Decoder::kChunk;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerCta) + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp
  const int lane = threadIdx.x % 32;
  const void* weight_row = w + row * row_bytes;
  float sums[kM] = {};
  for (int64_t c = lane; c < cols / kChunk; c += 32) {
    float weights[kChunk];
    Decoder::chunk(weight_row, c, weights);
    for (int t = 0; t < kM; ++t) {
      const float* xc = x + t * cols + c * kChunk;
      for (int j = 0; j < kChunk; ++j) sums[t] += weights[j] * xc[j];
    }
  }
  for (int t = 0; t < kM; ++t) {
    for (int offset = 16; offset > 0; offset /= 2) sums[t] += __shfl_down_sync(0xffffffffu, sums[t], offset);
    if (lane == 0) y[t * rows + row] = sums[t];
  }
}

// gemv_kernel<Decoder, kM> for a run-time m in 1..kM
template <class Decoder, int kM>
void launch(const char* w, int64_t row_bytes, int64_t rows, int64_t cols, const float* x, int64_t m, float* y,
            cudaStream_t stream) {
  if constexpr (kM > 1) {
    if (m < kM) return launch<Decoder, kM - 1>(w, row_bytes, rows, cols, x, m, y, stream);
  }
  const auto grid = static_cast<unsigned>((rows + kWarpsPerCta - 1) / kWarpsPerCta);
  gemv_kernel<Decoder, kM><<<grid, kWarpsPerCta * 32, 0, stream>>>(w, row_bytes, rows, cols, x, y);
}

}  // namespace

bool packed_gemv_supports(TensorType type) {
  return block_geometry(type).elements != 0;
}

void packed_gemv(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t m,
                 float* y, cudaStream_t stream) {
  if (!packed_gemv_supports(type)) {
    throw std::invalid_argument(
        "cuda packed_gemv: weights must be F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K or Q6_K");
  }
  if (m < 1 || m > kGemvMaxRows) {
    throw std::invalid_argument("cuda packed_gemv: " + std::to_string(m) + " activation rows (1.." +
                                std::to_string(kGemvMaxRows) + ")");
  }
  const BlockGeometry block = block_geometry(type);
  if (rows < 0 || cols < 0 || cols % block.elements != 0) {
    throw std::invalid_argument("cuda packed_gemv: " + std::to_string(rows) + " x " + std::to_string(cols) +
                                " is not rows of whole " + std::to_string(block.elements) +
                                "-element blocks");
  }
  if (rows == 0) return;
  const int64_t row_bytes = cols / block.elements * block.bytes;
  with_row_decoder(type, [&](auto decoder) {
    launch<decltype(decoder), kGemvMaxRows>(static_cast<const char*>(w), row_bytes, rows, cols, x, m, y,
                                            stream);
  });
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
