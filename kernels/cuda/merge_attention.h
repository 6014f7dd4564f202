// The online-softmax merge of two token sets' attention for the same queries, on the device:
// Backend::merge_attention (kernels/backend.h), same arguments, device pointers, on a stream.
// One thread block per (query row, head); -inf log-denominators mean "sees no token".
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvshrink::kernels::cuda {

void merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b, int64_t out_b_stride,
                     const float* lse_b, int64_t m, int64_t group, int64_t head_dim, cudaStream_t stream);

}  // namespace kvshrink::kernels::cuda
