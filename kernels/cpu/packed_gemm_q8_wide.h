// The integer-dot matmul of packed_gemm_q8.h for many activation rows (decode steps of many
// sequences), in the outer-product form of a GEMM micro-kernel: activation rows in the lanes.
//
// The activations are transposed once per call, on the compute threads: 4 bytes of one row (q_a,
// signed) per int32 lane, 16 rows per register, with their blocks' d_a and s_a likewise. A task
// unpacks kRows weight rows once into its panel (32 bytes q_w per block, d_w, m_w and, for Q8_0,
// -128 * sum_j q_w,j). For each block, eight vpdpbusd per weight row multiply a register of
// activations with 4 broadcast weight bytes and sum the block's 32 columns exactly in int32
// (vpdpbusd takes one unsigned side: Q4_1's q_w are 0..15; for Q8_0 the activations take + 128,
// which the panel's term takes out); then one convert, multiply and FMA (and, for Q4_1, one FMA
// of the min term) per weight row apply d_w d_a. Per block of 16 rows x 32 columns that is ~12
// vector instructions per weight row, where the 4 x 3 tiles need ~40: the tiles' 5 instructions
// per vpdpbusd for scales are what limits them from ~4 rows on.
//
// Same numerics as packed_gemm_q8 (exact integer block sums, f32 sums of the blocks' terms in
// block order), so a row differs from the tiles' result by f32 rounding only.
#pragma once

#include "kernels/cpu/q8_activations.h"
#include "kernels/weight.h"

namespace kvshrink::kernels::cpu {

// From this many activation rows on, packed_gemm_q8 takes this kernel (where it is compiled).
// Decode steps on SmolLM2-135M, 2 threads: 8 rows as fast as the 4 x 3 tiles, 16 rows 1.5x and
// 32 rows 1.6x faster, 4 rows 1.5x slower; prefill chunks of 512 rows 1.6x faster.
constexpr int64_t kQ8WideMinRows = 12;

// Whether this build has the kernel (AVX-512 VNNI).
bool packed_gemm_q8_wide_available();

// y[a.m x w.rows()] = a . w^T for Q4_1 / Q8_0 w, on the compute threads; as packed_gemm_q8.
void packed_gemm_q8_wide(const Weight& w, const Q8Activations& a, float* y);

}  // namespace kvshrink::kernels::cpu
