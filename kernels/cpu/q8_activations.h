// Activation rows quantized to 8 bits per 32-element block, the numerics of llama.cpp's CPU
// matmuls (its q8_0 / q8_1 activation blocks): the integer-dot matmul (packed_gemm_q8.h) multiplies
// them with Q4_1 / Q8_0 weight blocks, and CpuBackend with `--matmul-activations q8` quantizes every
// activation row of a packed-weight matmul this way, whatever the row count.
//
// Block b of row i (columns 32b..32b+31), with amax = max |x| over the block, as ggml's
// quantize_row_q8_0 / q8_1 (scales rounded to fp16 as its blocks store them):
//   q[j] = round_half_even(x[j] * 127 / amax), in -127..127 (all 0, and d = 0, if amax = 0)
//   d = fp16(amax / 127);  sum = sum_j q[j];  s = fp16(amax / 127 * sum)
//   x[j] ~ q[j] * d;  sum_j m * x[j] ~ m * s (Q4_1's min term)
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::kernels::cpu {

constexpr int64_t kQ8Block = 32;  // elements per activation block

struct Q8Activations {
  int64_t m = 0;             // rows
  int64_t cols = 0;          // a multiple of kQ8Block
  std::vector<int8_t> q;     // [m x cols]: row i at i * cols
  std::vector<float> d;      // [m x blocks()]: block b of row i at i * blocks() + b
  std::vector<float> s;      // [m x blocks()]
  std::vector<int32_t> sum;  // [m x blocks()]: sum of the block's q
  int64_t blocks() const { return cols / kQ8Block; }
};

// out = x[m x cols] quantized as above (out's vectors are reused); from 16 rows on, in tasks of
// rows on the compute threads (the same values). Throws std::invalid_argument when cols is not a
// multiple of kQ8Block.
void quantize_activations(const float* x, int64_t m, int64_t cols, Q8Activations& out);

// x[m x cols] = q * d, the values the integer kernels multiply, as floats.
void dequantize_activations(const Q8Activations& a, float* x);

}  // namespace kvshrink::kernels::cpu
