// Rotary position embedding on host memory (CpuBackend::rope, and the key rebuild of low-rank
// attention over pre-RoPE keys).
#pragma once

#include <cstdint>

namespace kvshrink::kernels::cpu {

// x[m x n_heads x head_dim], rotated in place by position: pairs (2i, 2i+1) by
// theta_i = pos * freq_base^(-2i/head_dim) (GGUF llama "NORM" convention)
void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions, float freq_base);

}  // namespace kvshrink::kernels::cpu
