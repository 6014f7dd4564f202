#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequantize_f16.h"
#include "kernels/cuda/quant_blocks.cuh"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // threads per block

unsigned blocks_for(int64_t count) {
  return static_cast<unsigned>((count + kThreads - 1) / kThreads);
}

// One thread per decoder chunk of the whole weight (chunks = rows x cols / kChunk, row-major).
template <class Decoder>
__global__ void dequantize_kernel(const char* w, int64_t row_bytes, int64_t cols, int64_t chunks,
                                  __half* out) {
  constexpr int kChunk = Decoder::kChunk;
  const int64_t at = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (at >= chunks) return;
  const int64_t row_chunks = cols / kChunk;
  const int64_t row = at / row_chunks, c = at % row_chunks;
  float v[kChunk];
  Decoder::chunk(w + row * row_bytes, c, v);
  __half* dst = out + row * cols + c * kChunk;
  for (int j = 0; j < kChunk; ++j) dst[j] = __float2half_rn(v[j]);
}

__global__ void f32_to_f16_kernel(const float* x, __half* out, int64_t count) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) out[i] = __float2half_rn(x[i]);
}

}  // namespace

bool dequantize_to_f16_supports(TensorType type) {
  return block_geometry(type).elements != 0;
}

void dequantize_to_f16(TensorType type, const void* w, int64_t rows, int64_t cols, __half* out,
                       cudaStream_t stream) {
  if (!dequantize_to_f16_supports(type)) {
    throw std::invalid_argument(
        "cuda dequantize_to_f16: weights must be F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K or Q6_K");
  }
  const BlockGeometry block = block_geometry(type);
  if (rows < 0 || cols < 0 || cols % block.elements != 0) {
    throw std::invalid_argument("cuda dequantize_to_f16: " + std::to_string(rows) + " x " +
                                std::to_string(cols) + " is not rows of whole " +
                                std::to_string(block.elements) + "-element blocks");
  }
  if (rows == 0 || cols == 0) return;
  const int64_t row_bytes = cols / block.elements * block.bytes;
  with_row_decoder(type, [&](auto decoder) {
    using Decoder = decltype(decoder);
    const int64_t chunks = rows * (cols / Decoder::kChunk);
    dequantize_kernel<Decoder><<<blocks_for(chunks), kThreads, 0, stream>>>(static_cast<const char*>(w),
                                                                            row_bytes, cols, chunks, out);
  });
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

void f32_to_f16(const float* x, __half* out, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  f32_to_f16_kernel<<<blocks_for(count), kThreads, 0, stream>>>(x, out, count);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
