// How the attention kernels read the KV store's rows (kernels/backend.h: KvBlockView keys and
// values, LowRankBucket coefficients). Each such array is row-major elements of its view's dtype
// (kernels/kv_dtype.h): kF16, IEEE half (the bits of __half; the host writes them as uint16_t), or
// kF32, float. An element is read as f32, and the kernels accumulate in f32 whatever the storage.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/kv_dtype.h"

namespace kvshrink::kernels::cuda {

// Element `index` (counted in elements, not bytes) of the array at `base` of `dtype` elements, as f32.
__device__ inline float kv_element(const void* base, KvDtype dtype, int64_t index) {
  if (dtype == KvDtype::kF16) return __half2float(static_cast<const __half*>(base)[index]);
  return static_cast<const float*>(base)[index];
}

// One row of such an array (a token's key or value, a bucket token's coefficients), kept where a
// kernel would keep a `const float*` to the row: the array's base, the row's first element and the
// dtype. row[k] is element offset + k of the array, as f32.
struct KvRow {
  const void* base;
  int64_t offset;
  KvDtype dtype;
  __device__ float operator[](int64_t k) const { return kv_element(base, dtype, offset + k); }
};

}  // namespace kvshrink::kernels::cuda
