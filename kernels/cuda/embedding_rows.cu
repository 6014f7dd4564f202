#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding_rows.h"
#include "kernels/cuda/quant_blocks.cuh"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // per token row

// One thread block per token; thread k writes the row's decoder chunks k, k + kThreads, ... (32
// elements each for the blocked packings, one for F32 / F16 / BF16).
template <class Decoder>
__global__ void rows_kernel(const char* table, int64_t row_bytes, int64_t cols, const int32_t* tokens,
                            float* out) {
  constexpr int kChunk = Decoder::kChunk;
  const void* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * row_bytes;
  float* dst = out + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols / kChunk; c += kThreads) {
    float w[kChunk];
    Decoder::chunk(row, c, w);
    for (int j = 0; j < kChunk; ++j) dst[c * kChunk + j] = w[j];
  }
}

}  // namespace

bool embedding_rows_supports(TensorType type) {
  return block_geometry(type).elements != 0;
}

void embedding_rows(TensorType type, const void* table, int64_t cols, const int32_t* tokens, int64_t n,
                    float* out, cudaStream_t stream) {
  if (!embedding_rows_supports(type)) {
    throw std::invalid_argument(
        "cuda embedding_rows: tables must be F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K or Q6_K");
  }
  const BlockGeometry block = block_geometry(type);
  if (cols < 0 || cols % block.elements != 0) {
    throw std::invalid_argument("cuda embedding_rows: " + std::to_string(cols) + " columns are not whole " +
                                std::to_string(block.elements) + "-element blocks");
  }
  if (n == 0) return;
  const int64_t row_bytes = cols / block.elements * block.bytes;
  with_row_decoder(type, [&](auto decoder) {
    rows_kernel<decltype(decoder)><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        static_cast<const char*>(table), row_bytes, cols, tokens, out);
  });
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
