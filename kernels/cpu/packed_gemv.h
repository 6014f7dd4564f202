// Matrix-vector product straight from GGML-packed weight rows (decode: one token, so the weights
// are read once per step and reading fewer bytes is what makes it fast).
#pragma once

#include <vector>

#include "kernels/weight.h"

namespace kvshrink::kernels::cpu {

// y[r] = sum_c row_r(w)[c] * x[c] for every row r; w packed (dtype() != F32). Q4_1 and Q8_0 use
// fused AVX2 kernels; other types dequantize one row at a time into `row_scratch`.
void packed_gemv(const Weight& w, const float* x, float* y, std::vector<float>& row_scratch);

}  // namespace kvshrink::kernels::cpu
