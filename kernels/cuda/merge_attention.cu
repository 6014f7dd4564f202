#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/merge_attention.h"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kThreads = 64;  // threads per (row, head): one per dimension, looping past 64

// With a = lse, b = lse_b and top = max(a, b): out = (e^(a-top) out + e^(b-top) out_b) / (sum of
// the weights), lse = top + log(sum): as the CPU backend.
__global__ void merge_kernel(float* out, int64_t out_stride, float* lse, const float* out_b,
                             int64_t out_b_stride, const float* lse_b, int64_t group, int64_t head_dim) {
  const int64_t i = blockIdx.x / group, j = blockIdx.x % group;
  const float a = lse[blockIdx.x], b = lse_b[blockIdx.x];
  if (b == -INFINITY) return;  // the same for the whole thread block
  const bool only_b = a == -INFINITY;
  const float top = only_b ? b : fmaxf(a, b);
  const float wa = only_b ? 0.0f : expf(a - top), wb = expf(b - top);
  const float inv = 1.0f / (wa + wb);
  float* o = out + i * out_stride + j * head_dim;
  const float* ob = out_b + i * out_b_stride + j * head_dim;
  for (int64_t k = threadIdx.x; k < head_dim; k += kThreads)
    o[k] = only_b ? ob[k] : (wa * o[k] + wb * ob[k]) * inv;
  __syncthreads();  // every thread has read lse before thread 0 writes it
  if (threadIdx.x == 0) lse[blockIdx.x] = only_b ? b : top + logf(wa + wb);
}

}  // namespace

void merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b, int64_t out_b_stride,
                     const float* lse_b, int64_t m, int64_t group, int64_t head_dim, cudaStream_t stream) {
  if (m * group == 0) return;
  merge_kernel<<<static_cast<unsigned>(m * group), kThreads, 0, stream>>>(
      out, out_stride, lse, out_b, out_b_stride, lse_b, group, head_dim);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
