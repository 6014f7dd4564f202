#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kv_elements.cuh"
#include "kernels/cuda/low_rank_attention.h"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kWarp = 32, kWarps = 4, kThreads = kWarps * kWarp;
constexpr int kMaxDim = static_cast<int>(kAttentionMaxHeadDim);
constexpr int kDimsPerLane = kMaxDim / kWarp;  // a lane holds basis coordinates lane + 32c
constexpr int64_t kMaxGridYZ = 65535;

// exp(from - to) for to >= from; 0 when from is -inf (a state over no token).
__device__ float rescale(float from, float to) {
  return from == -INFINITY ? 0.0f : expf(from - to);
}

// Sum of v over the warp, to every lane.
__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

struct Shared {
  float q[kMaxDim];              // the query head
  float q_basis[kMaxDim];        // post-RoPE keys: q_z = U_k[:r_max] q
  double inv_freq[kMaxDim / 2];  // pre-RoPE keys: rope_base^(-2i/head_dim)
  float maxes[kWarps], sums[kWarps];
  float latent[kWarps][kMaxDim];  // each warp's value sums in the basis; then row 0: a_z
};

// A warp's online softmax over its tokens: max score, sum of exp(score - max), and the lane's
// basis coordinates of the value sum weighted by exp(score - max).
struct WarpState {
  float max = -INFINITY, sum = 0.0f;
  float acc[kDimsPerLane] = {};
};

// q . RoPE(U_k[:r]^T z, position), to every lane of the warp: lane takes the pairs (2p, 2p+1),
// p = lane + 32c; an odd head_dim's last component stays unrotated, as kernels/cpu/rope.cpp.
__device__ float rebuilt_key_dot(const LowRankAttention& a, const Shared& s, const KvRow& z, int64_t r,
                                 int32_t position) {
  const int d = static_cast<int>(a.head_dim);
  float dot = 0.0f;
  for (int p = threadIdx.x % kWarp; 2 * p < d; p += kWarp) {
    const bool pair = 2 * p + 1 < d;
    float k0 = 0.0f, k1 = 0.0f;
    for (int64_t c = 0; c < r; ++c) {
      const float* u = a.key_basis + c * d + 2 * p;
      k0 += z[c] * u[0];
      if (pair) k1 += z[c] * u[1];
    }
    if (!pair) {
      dot += s.q[2 * p] * k0;
      continue;
    }
    double sin_theta, cos_theta;
    sincos(position * s.inv_freq[p], &sin_theta, &cos_theta);
    const auto cs = static_cast<float>(cos_theta), sn = static_cast<float>(sin_theta);
    dot += s.q[2 * p] * (k0 * cs - k1 * sn) + s.q[2 * p + 1] * (k0 * sn + k1 * cs);
  }
  return warp_sum(dot);
}

// q_z[:r] . z, to every lane of the warp.
__device__ float latent_key_dot(const Shared& s, const KvRow& z, int64_t r) {
  float dot = 0.0f;
  for (int64_t k = threadIdx.x % kWarp; k < r; k += kWarp) dot += s.q_basis[k] * z[k];
  return warp_sum(dot);
}

// The warp's state over every 4th token of the buckets that the query at q_position sees.
__device__ WarpState attend_buckets(const LowRankAttention& a, const Shared& s, int32_t q_position) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  WarpState st;
  for (int64_t b = 0; b < a.n_buckets; ++b) {
    const LowRankBucket bucket = a.buckets[b];
    const int64_t r = bucket.rank;
    for (int64_t t = warp; t < bucket.n; t += kWarps) {
      const int32_t position = bucket.positions[t];
      if (position > q_position) continue;
      const KvRow z_key{bucket.key_coefficients, t * r, bucket.dtype};
      const float dot =
          a.pre_rope_keys ? rebuilt_key_dot(a, s, z_key, r, position) : latent_key_dot(s, z_key, r);
      const float score = dot * a.scale;
      const float new_max = fmaxf(st.max, score);
      const float correction = rescale(st.max, new_max), p = expf(score - new_max);
      st.sum = st.sum * correction + p;
      st.max = new_max;
      const KvRow z_value{bucket.value_coefficients, t * r, bucket.dtype};
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int k = lane + c * kWarp;
        st.acc[c] = st.acc[c] * correction + (k < r ? p * z_value[k] : 0.0f);
      }
    }
  }
  return st;
}

// The warps' states merged: lse, a_z normalised, and out = U_v[:r_max]^T a_z for query i, `head`.
__device__ void finish(const LowRankAttention& a, Shared& s, const WarpState& st, int64_t i, int64_t head,
                       int64_t r_max) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) {
    s.maxes[warp] = st.max;
    s.sums[warp] = st.sum;
  }
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) s.latent[warp][lane + c * kWarp] = st.acc[c];
  __syncthreads();
  float top = -INFINITY, total = 0.0f;
  for (int w = 0; w < kWarps; ++w) top = fmaxf(top, s.maxes[w]);
  for (int w = 0; w < kWarps; ++w) total += s.sums[w] * rescale(s.maxes[w], top);
  const bool seen = top != -INFINITY;
  if (threadIdx.x == 0) a.lse[i * a.group + head] = seen ? top + logf(total) : -INFINITY;
  for (int64_t k = threadIdx.x; k < r_max; k += kThreads) {  // column k is this thread's alone
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) sum += s.latent[w][k] * rescale(s.maxes[w], top);
    s.latent[0][k] = seen ? sum / total : 0.0f;
  }
  __syncthreads();
  const int64_t d = a.head_dim;
  for (int64_t x = threadIdx.x; x < d; x += kThreads) {
    float out = 0.0f;
    for (int64_t k = 0; k < r_max; ++k) out += s.latent[0][k] * a.value_basis[k * d + x];
    a.out[i * a.out_stride + head * d + x] = out;
  }
}

// Grid (call, query token, query head).
__global__ void __launch_bounds__(kThreads)
    low_rank_kernel(const LowRankAttention* calls, LowRankBatchShape shape) {
  const LowRankAttention a = calls[blockIdx.x];
  const int64_t i = blockIdx.y, head = blockIdx.z;
  if (a.head_dim < 1 || a.head_dim > shape.max_head_dim || a.group > shape.max_group || a.m > shape.max_m ||
      i >= a.m || head >= a.group)
    return;
  int64_t r_max = 0;
  for (int64_t b = 0; b < a.n_buckets; ++b) r_max = max(r_max, a.buckets[b].rank);
  const int64_t d = a.head_dim;
  if (r_max > d) return;  // a basis holds at most head_dim vectors
  __shared__ Shared s;
  for (int64_t k = threadIdx.x; k < d; k += kThreads) s.q[k] = a.q[i * a.q_stride + head * d + k];
  if (a.pre_rope_keys) {
    for (int64_t p = threadIdx.x; p < d / 2; p += kThreads)
      s.inv_freq[p] =
          pow(static_cast<double>(a.rope_base), -2.0 * static_cast<double>(p) / static_cast<double>(d));
  }
  __syncthreads();
  if (!a.pre_rope_keys) {
    for (int64_t k = threadIdx.x; k < r_max; k += kThreads) {
      float dot = 0.0f;
      for (int64_t x = 0; x < d; ++x) dot += a.key_basis[k * d + x] * s.q[x];
      s.q_basis[k] = dot;
    }
    __syncthreads();
  }
  const WarpState st = attend_buckets(a, s, a.q_positions[i]);
  finish(a, s, st, i, head, r_max);
}

}  // namespace

void low_rank_attention(const LowRankAttention* calls, int64_t n_calls, const LowRankBatchShape& shape,
                        cudaStream_t stream) {
  const auto refuse = [](const std::string& why) {
    throw std::invalid_argument("cuda low-rank attention: " + why);
  };
  if (n_calls < 0 || n_calls > INT_MAX) refuse(std::to_string(n_calls) + " calls");
  if (n_calls == 0) return;
  if (shape.max_head_dim < 1 || shape.max_head_dim > kAttentionMaxHeadDim)
    refuse("head_dim " + std::to_string(shape.max_head_dim) + " (1.." + std::to_string(kAttentionMaxHeadDim) +
           " taken)");
  if (shape.max_group < 1 || shape.max_m < 0) refuse("a negative or empty batch shape");
  if (shape.max_group > kMaxGridYZ || shape.max_m > kMaxGridYZ)
    refuse("group or query count beyond one launch");
  if (shape.max_m == 0) return;
  const dim3 grid(static_cast<unsigned>(n_calls), static_cast<unsigned>(shape.max_m),
                  static_cast<unsigned>(shape.max_group));
  low_rank_kernel<<<grid, kThreads, 0, stream>>>(calls, shape);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
