#include "kernels/cpu/kv_elements.h"

#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvshrink::kernels::cpu {

void kv_to_f32(const void* src, KvDtype dtype, float* dst, int64_t n) {
  dequantize_row(dtype == KvDtype::kF16 ? TensorType::F16 : TensorType::F32, src, dst, n);
}

void kv_from_f32(const float* src, KvDtype dtype, void* dst, int64_t n) {
  if (dtype == KvDtype::kF32) {
    if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  auto* out = static_cast<uint16_t*>(dst);
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i halves = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), halves);
  }
#endif
  for (; i < n; ++i) out[i] = fp32_to_fp16(src[i]);
}

}  // namespace kvshrink::kernels::cpu
