// Device kernels of the Backend's row-wise and elementwise operations (RMSNorm, RoPE, SiLU * up,
// add), on device pointers and a stream: shapes and semantics as the Backend method of the same
// name says (kernels/backend.h); f32 in and out. Each returns once the kernel is queued and
// throws std::runtime_error if the launch fails.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvshrink::kernels::cuda {

// y[m x n] = x / sqrt(mean(x^2) + eps) * gamma[n], one thread block per row (y may alias x).
void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps,
              cudaStream_t stream);

// x[m x n_heads x head_dim] rotated in place by positions[m]: pairs (2i, 2i+1) by
// theta_i = pos * freq_base^(-2i/head_dim), theta and its sine and cosine in double as on the CPU.
void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions, float freq_base,
          cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t count, cudaStream_t stream);

// y[i] += x[i]
void add(float* y, const float* x, int64_t count, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
