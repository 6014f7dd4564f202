// IEEE half helpers for tests of the 16-bit KV store: values as the store rounds them, and their
// bits as the host uploads them.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/dequantize.h"

namespace kvshrink::testing {

inline float half_rounded(float x) {
  return kernels::cpu::fp16_to_fp32(kernels::cpu::fp32_to_fp16(x));
}

inline std::vector<float> half_rounded(std::vector<float> xs) {
  for (auto& x : xs) x = half_rounded(x);
  return xs;
}

inline std::vector<uint16_t> to_f16(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = kernels::cpu::fp32_to_fp16(x[i]);
  return h;
}

}  // namespace kvshrink::testing
