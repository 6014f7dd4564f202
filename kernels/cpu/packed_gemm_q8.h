// Matrix product of Q4_1 / Q8_0 weight rows with activation rows quantized to 8 bits
// (q8_activations.h), in integer dot products as llama.cpp computes them. For weight block
// (d_w, m_w, q_w) and activation block (d_a, s_a, q_a) of the same 32 columns:
//   Q4_1: sum_j w_j a_j = d_w d_a sum_j q_w,j q_a,j + m_w s_a     (q_w in 0..15)
//   Q8_0: sum_j w_j a_j = d_w d_a sum_j q_w,j q_a,j               (q_w in -128..127)
// The integer sums are exact; the blocks' float terms are summed in f32, so the result differs
// from packed_gemm_q8_portable (and from the same products in double) by f32 rounding only, and
// from the f32-activation product (packed_gemv.h) by the activations' quantization error.
//
// With AVX-512 VNNI + VBMI (compile time, -march=native), a register holds two blocks: the weight
// bytes are gathered with one byte permute (Q4_1 nibbles shifted into 64 unsigned bytes; Q8_0
// bytes offset by 128 to be unsigned, the 128 * sum_j q_a,j it adds taken out by starting each
// accumulator at minus that), multiplied by one vpdpbusd, then scaled per block in f32. Each
// tile reuses every activation register for 4 weight rows. From kQ8WideMinRows activation rows
// on it takes packed_gemm_q8_wide.h instead (activation rows in the lanes). Elsewhere
// packed_gemm_q8 is the portable loop.
#pragma once

#include "kernels/cpu/q8_activations.h"
#include "kernels/tensor_type.h"
#include "kernels/weight.h"

namespace kvshrink::kernels::cpu {

// Whether packed_gemm_q8 takes weights of this type (Q4_1, Q8_0).
bool packed_gemm_q8_supports(TensorType type);

// y[a.m x w.rows()] = a . w^T, row-major; w.cols() == a.cols. Output rows are split over the
// compute threads (packed_gemm_small_threads.h). Throws std::invalid_argument for another type.
void packed_gemm_q8(const Weight& w, const Q8Activations& a, float* y);

// The same, one block at a time in portable code on the calling thread: the fallback without
// AVX-512 VNNI, and a second implementation for the tests.
void packed_gemm_q8_portable(const Weight& w, const Q8Activations& a, float* y);

}  // namespace kvshrink::kernels::cpu
