// Stored K/V elements (kernels/kv_dtype.h) to and from f32: rows for the kernels that gather,
// one element for plain loops. Half is IEEE binary16 held as uint16_t; conversions round to
// nearest even and use F16C where the CPU has it.
#pragma once

#include <cstdint>

#include "kernels/cpu/dequantize.h"
#include "kernels/kv_dtype.h"

namespace kvshrink::kernels::cpu {

// dst[0..n) = the n elements of src (dtype) as f32.
void kv_to_f32(const void* src, KvDtype dtype, float* dst, int64_t n);
// dst (dtype) [0..n) = src[0..n) rounded to dtype.
void kv_from_f32(const float* src, KvDtype dtype, void* dst, int64_t n);

inline float element_f32(float x) {
  return x;
}
inline float element_f32(uint16_t half) {
  return fp16_to_fp32(half);
}

}  // namespace kvshrink::kernels::cpu
