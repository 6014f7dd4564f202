#include "kernels/cpu/dequantize.h"

#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/quant_blocks.h"

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvshrink::kernels::cpu {

float fp16_to_fp32(uint16_t h) {
  // binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in binary32.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return sign | 0x7E00u;   // NaN -> quiet NaN
  if (magnitude >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to infinity
  if (magnitude >= 0x38800000u) {
    // Normal half (>= 2^-14): rebias the exponent, keep 10 of 23 mantissa bits, round to nearest even.
    const uint32_t rebiased = magnitude - ((127u - 15u) << 23);
    uint32_t half = rebiased >> 13;
    const uint32_t rest = rebiased & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // a carry correctly bumps the exponent
    return static_cast<uint16_t>(sign | half);
  }
  if (magnitude <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero
  // Subnormal half: value = m * 2^(e - 150) with 24-bit m; in units of 2^-24 that is m >> (126 - e).
  const uint32_t exponent = magnitude >> 23;
  const uint32_t m = (magnitude & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14..24
  uint32_t half = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;  // 1024 becomes the smallest normal
  return static_cast<uint16_t>(sign | half);
}

float bf16_to_fp32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

namespace {

// A block's fp16 scale as float: the F16C instruction when available (same result as fp16_to_fp32).
inline float scale_to_fp32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return fp16_to_fp32(h);
#endif
}

void dequantize_f32(const float* x, float* y, int64_t n) {
  if (n > 0) std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
}

void dequantize_f16(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i));
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(halves));
  }
#endif
  for (; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void dequantize_bf16(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

void dequantize_q4_0(const BlockQ4_0* __restrict blocks, float* __restrict y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, y += kQK4_0) {
    const BlockQ4_0& block = blocks[b];
    const float d = scale_to_fp32(block.d);
    for (int j = 0; j < kQK4_0 / 2; ++j) y[j] = static_cast<float>((block.qs[j] & 0xF) - 8) * d;
    for (int j = 0; j < kQK4_0 / 2; ++j) y[j + kQK4_0 / 2] = static_cast<float>((block.qs[j] >> 4) - 8) * d;
  }
}

void dequantize_q4_1(const BlockQ4_1* __restrict blocks, float* __restrict y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, y += kQK4_1) {
    const BlockQ4_1& block = blocks[b];
    const float d = scale_to_fp32(block.d);
    const float m = scale_to_fp32(block.m);
#if defined(__AVX2__)
    // GCC does not vectorize the nibble split; this is the loop below, 8 floats at a time.
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block.qs));
    const __m128i low_nibble = _mm_set1_epi8(0x0F);
    const __m128i halves[2] = {_mm_and_si128(packed, low_nibble),
                               _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibble)};
    const __m256 scale = _mm256_set1_ps(d);
    const __m256 min = _mm256_set1_ps(m);
    for (int h = 0; h < 2; ++h) {  // h = 0: elements 0..15 (low nibbles), h = 1: elements 16..31
      const __m256 first = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(halves[h]));
      const __m256 second = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(halves[h], 8)));
      _mm256_storeu_ps(y + 16 * h, _mm256_add_ps(_mm256_mul_ps(first, scale), min));
      _mm256_storeu_ps(y + 16 * h + 8, _mm256_add_ps(_mm256_mul_ps(second, scale), min));
    }
#else
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      y[j] = static_cast<float>(block.qs[j] & 0xF) * d + m;
      y[j + kQK4_1 / 2] = static_cast<float>(block.qs[j] >> 4) * d + m;
    }
#endif
  }
}

void dequantize_q8_0(const BlockQ8_0* __restrict blocks, float* __restrict y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, y += kQK8_0) {
    const BlockQ8_0& block = blocks[b];
    const float d = scale_to_fp32(block.d);
    for (int j = 0; j < kQK8_0; ++j) y[j] = static_cast<float>(block.qs[j]) * d;
  }
}

// Scale and min of Q4_K sub-block j (layout in quant_blocks.h).
struct ScaleMin {
  uint8_t scale;
  uint8_t min;
};
ScaleMin q4_k_scale_min(int j, const uint8_t* s) {
  if (j < 4) return {static_cast<uint8_t>(s[j] & 63), static_cast<uint8_t>(s[j + 4] & 63)};
  return {static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)),
          static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4))};
}

void dequantize_q4_k(const BlockQ4_K* __restrict blocks, float* __restrict y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ4_K& block = blocks[b];
    const float d = scale_to_fp32(block.d);
    const float dmin = scale_to_fp32(block.dmin);
    const uint8_t* q = block.qs;
    for (int chunk = 0; chunk < 4; ++chunk, q += 32, y += 64) {  // 64 outputs from 32 bytes
      const ScaleMin low = q4_k_scale_min(2 * chunk, block.scales);
      const ScaleMin high = q4_k_scale_min(2 * chunk + 1, block.scales);
      const float d_low = d * low.scale, min_low = dmin * low.min;
      const float d_high = d * high.scale, min_high = dmin * high.min;
      for (int l = 0; l < 32; ++l) y[l] = d_low * static_cast<float>(q[l] & 0xF) - min_low;
      for (int l = 0; l < 32; ++l) y[l + 32] = d_high * static_cast<float>(q[l] >> 4) - min_high;
    }
  }
}

void dequantize_q6_k(const BlockQ6_K* __restrict blocks, float* __restrict y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, y += kQK_K) {
    const BlockQ6_K& block = blocks[b];
    // Unpack the 6-bit quants (minus 32) in output order, then scale 16 at a time.
    int8_t q[kQK_K];
    for (int half = 0; half < 2; ++half) {  // 128 outputs per half
      const uint8_t* ql = block.ql + 64 * half;
      const uint8_t* qh = block.qh + 32 * half;
      int8_t* out = q + 128 * half;
      for (int l = 0; l < 32; ++l) {
        out[l] = static_cast<int8_t>(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
        out[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        out[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        out[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    const float d = scale_to_fp32(block.d);
    for (int s = 0; s < kQK_K / 16; ++s) {
      const float scale = d * block.scales[s];
      for (int i = 0; i < 16; ++i) y[16 * s + i] = scale * static_cast<float>(q[16 * s + i]);
    }
  }
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  const TensorTypeInfo& info = tensor_type_info(type);
  const auto block_elements = static_cast<int64_t>(info.block_elements);
  if (n < 0 || n % block_elements != 0) {
    throw std::invalid_argument("dequantize_row: " + std::to_string(n) +
                                " elements is not a multiple of the " + std::string(info.name) +
                                " block size " + std::to_string(block_elements));
  }
  const int64_t n_blocks = n / block_elements;
  switch (type) {
    case TensorType::F32:
      return dequantize_f32(static_cast<const float*>(src), dst, n);
    case TensorType::F16:
      return dequantize_f16(static_cast<const uint16_t*>(src), dst, n);
    case TensorType::BF16:
      return dequantize_bf16(static_cast<const uint16_t*>(src), dst, n);
    case TensorType::Q4_0:
      return dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, n_blocks);
    case TensorType::Q4_1:
      return dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, n_blocks);
    case TensorType::Q8_0:
      return dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, n_blocks);
    case TensorType::Q4_K:
      return dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, n_blocks);
    case TensorType::Q6_K:
      return dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, n_blocks);
  }
  throw std::invalid_argument("dequantize_row: unknown tensor type " +
                              std::to_string(static_cast<uint32_t>(type)));
}

}  // namespace kvshrink::kernels::cpu
