// Reference quantizers float32 -> GGML blocks (the rounding of ggml's quantize_row_*_ref), used to
// build small quantized models in tests. Block layouts: kernels/cpu/quant_blocks.h.
#pragma once

#include <cstdint>

namespace kvshrink::kernels::cpu {

// x holds n finite floats, n a multiple of 32; dst receives n / 32 blocks.
// Throws std::invalid_argument when n is not a multiple of 32.
void quantize_row_q4_0(const float* x, void* dst, int64_t n);  // d = signed max / -8, q in 0..15
void quantize_row_q4_1(const float* x, void* dst, int64_t n);  // d = (max - min) / 15, m = min
void quantize_row_q8_0(const float* x, void* dst, int64_t n);  // d = max |x| / 127

}  // namespace kvshrink::kernels::cpu
