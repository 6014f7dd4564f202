// Matrix product straight from GGML-packed weight rows for a few tokens (decode: one row per
// sequence). Every packed weight row is read once per call: each 32-element block is converted to
// floats in registers once and multiplied with all m activation rows, which stay exact f32, so the
// result equals the product with the dequantized rows to float rounding. Reading fewer bytes
// (Q4_1: 0.625 bytes per weight) and converting each weight once is what makes it fast.
#pragma once

#include <cstdint>

#include "kernels/weight.h"

namespace kvshrink::kernels::cpu {

// Up to this many tokens matmul uses packed_gemm: a decode step's matmuls on SmolLM2-135M's shapes
// took 2.7x less time than with dequantize + SGEMM at m = 64 (4.9-7x at m = 2..8) on 2 threads;
// larger m (prefill chunks) stays on SGEMM, whose efficiency grows with m.
constexpr int64_t kPackedGemmMaxTokens = 64;

// y[m x w.rows()] = x[m x w.cols()] . w^T, row-major; w packed (dtype() != F32). Q4_1 and Q8_0
// convert blocks in registers; other types dequantize a few rows at a time into thread-local
// scratch. Output rows are split over the compute threads (packed_gemm_small_threads.h).
void packed_gemm(const Weight& w, const float* x, float* y, int64_t m);

}  // namespace kvshrink::kernels::cpu
