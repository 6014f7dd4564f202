#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // threads per block; a multiple of the warp size

int64_t blocks_for(int64_t count) {
  return (count + kThreads - 1) / kThreads;
}

// Sum of v over the block's threads, returned to every thread.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();  // warp_sums may be reused by the next call
  return total;
}

__global__ void rms_norm_kernel(const float* x, const float* gamma, float* y, int64_t n, float eps) {
  const float* row = x + blockIdx.x * n;
  float* out = y + blockIdx.x * n;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) squares += row[i] * row[i];
  const float inv_rms = rsqrtf(block_sum(squares) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) out[i] = row[i] * inv_rms * gamma[i];
}

// One thread per (token, head, pair).
__global__ void rope_kernel(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                            double freq_base) {
  const int64_t half = head_dim / 2;
  const int64_t at = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (at >= m * n_heads * half) return;
  const int64_t i = at % half, token = at / (half * n_heads);
  const double inv_freq = pow(freq_base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  double sin_theta, cos_theta;
  sincos(positions[token] * inv_freq, &sin_theta, &cos_theta);
  const auto c = static_cast<float>(cos_theta), s = static_cast<float>(sin_theta);
  float* pair = x + (at / half) * head_dim + 2 * i;
  const float x0 = pair[0], x1 = pair[1];
  pair[0] = x0 * c - x1 * s;
  pair[1] = x0 * s + x1 * c;
}

__global__ void silu_mul_kernel(float* gate, const float* up, int64_t count) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) y[i] += x[i];
}

}  // namespace

void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps,
              cudaStream_t stream) {
  if (m == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(m), kThreads, 0, stream>>>(x, gamma, y, n, eps);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions, float freq_base,
          cudaStream_t stream) {
  const int64_t pairs = m * n_heads * (head_dim / 2);
  if (pairs == 0) return;
  rope_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(x, m, n_heads, head_dim, positions,
                                                          static_cast<double>(freq_base));
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

void silu_mul(float* gate, const float* up, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  silu_mul_kernel<<<blocks_for(count), kThreads, 0, stream>>>(gate, up, count);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

void add(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  add_kernel<<<blocks_for(count), kThreads, 0, stream>>>(y, x, count);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
