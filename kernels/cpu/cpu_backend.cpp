#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/head_attention.h"
#include "kernels/cpu/kivi_group.h"
#include "kernels/cpu/kv_elements.h"
#include "kernels/cpu/packed_gemm_q8.h"
#include "kernels/cpu/packed_gemm_small_threads.h"
#include "kernels/cpu/packed_gemv.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/cpu/window_attention.h"

namespace kvshrink::kernels::cpu {
namespace {

// run(call) for every call of the batch as tasks on the compute threads, each in its thread's
// scratch; when a call multiplies with OpenBLAS (uses_blas(call)), OpenBLAS is single-threaded
// meanwhile, so the calls run side by side instead of one after another on threaded SGEMMs.
template <class Call, class UsesBlas, class Run>
void run_batch(std::span<const Call> batch, UsesBlas uses_blas, Run run) {
  auto task = [&](int64_t t) { run(batch[t], thread_attention_scratch()); };
  const auto n = static_cast<int64_t>(batch.size());
  if (std::any_of(batch.begin(), batch.end(), uses_blas)) {
    run_blas_tasks_on_compute_threads(n, task);
  } else {
    run_on_compute_threads(n, task);
  }
}

// The batch with each prefill call cut into calls of kPrefillQueryBlock query rows, which the
// kernel would run one after another anyway (a block reads only the tokens it can see): so one
// long prefill chunk spreads over the compute threads. Calls that accumulate mass stay whole, since
// their blocks would add to the same mass.
std::vector<HeadAttention> split_query_blocks(std::span<const HeadAttention> batch) {
  std::vector<HeadAttention> calls;
  for (const auto& call : batch) {
    if (call.track_mass) {
      calls.push_back(call);
      continue;
    }
    for (int64_t begin = 0; begin < call.m; begin += kPrefillQueryBlock) {
      HeadAttention part = call;
      part.q += begin * call.q_stride;
      if (part.out) part.out += begin * call.out_stride;
      part.q_positions += begin;
      part.m = std::min(kPrefillQueryBlock, call.m - begin);
      if (part.lse) part.lse += begin * call.group;
      calls.push_back(part);
    }
  }
  return calls;
}

}  // namespace

// f32 weights: OpenBLAS directly. Packed weights: up to kPackedGemmMaxTokens tokens (decode, one
// row per sequence) read the packed rows (packed_gemm, on the compute threads); more tokens
// dequantize kDequantRows rows at a time into scratch and multiply with SGEMM, which costs one
// dequantization of the weights per prefill chunk (~1% of the GEMM time at 512 tokens). With q8
// activations, Q4_1 / Q8_0 weights take the integer kernels at every m (cpu_backend.h).
void CpuBackend::matmul(const Weight& w, const float* x, float* y, int64_t m) {
  constexpr int64_t kDequantRows = 512;
  const auto rows = static_cast<int>(w.rows());
  const auto cols = static_cast<int>(w.cols());
  if (w.dtype() == TensorType::F32) {
    if (m == 1) {  // sgemm with M = 1 is ~30x slower than sgemv in OpenBLAS
      cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w.f32(), cols, x, 1, 0.0f, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), rows, cols, 1.0f, x, cols,
                  w.f32(), cols, 0.0f, y, rows);
    }
    return;
  }
  if (activations_ == MatmulActivations::kQ8 && cols % kQ8Block == 0) {
    quantize_activations(x, m, cols, quantized_rows_);
    if (packed_gemm_q8_supports(w.dtype())) {
      packed_gemm_q8(w, quantized_rows_, y);
      return;
    }
    requantized_.resize(static_cast<size_t>(m * cols));
    dequantize_activations(quantized_rows_, requantized_.data());
    x = requantized_.data();
  }
  if (m <= kPackedGemmMaxTokens) {
    packed_gemm(w, x, y, m);
    return;
  }
  for (int64_t first = 0; first < w.rows(); first += kDequantRows) {
    const int64_t n = std::min(kDequantRows, w.rows() - first);
    row_scratch_.resize(static_cast<size_t>(n * cols));
    for (int64_t r = 0; r < n; ++r)
      dequantize_row(w.dtype(), w.row(first + r), row_scratch_.data() + r * cols, cols);
    // y[:, first:first+n] = x[m x cols] . scratch[n x cols]^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), cols, 1.0f,
                x, cols, row_scratch_.data(), cols, 0.0f, y + first, rows);
  }
}

void CpuBackend::matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, x, static_cast<int>(k), b, static_cast<int>(k), 0.0f, y,
              static_cast<int>(n));
}

void CpuBackend::rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) {
  for (int64_t row = 0; row < m; ++row) {
    const float* xr = x + row * n;
    float* yr = y + row * n;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < n; ++i) sum_squares += static_cast<double>(xr[i]) * xr[i];
    const auto inv_rms = static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv_rms * gamma[i];
  }
}

void CpuBackend::rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                      float freq_base) {
  cpu::rope(x, m, n_heads, head_dim, positions, freq_base);
}

void CpuBackend::silu_mul(float* gate, const float* up, int64_t count) {
  int64_t i = 0;
#if defined(KVSHRINK_SIMD_AVX512)  // (GCC leaves the plain loop below scalar)
  for (; i + 16 <= count; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 sigmoid_denominator =
        _mm512_add_ps(_mm512_set1_ps(1.0f), fast_exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, sigmoid_denominator), _mm512_loadu_ps(up + i)));
  }
#endif
  for (; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + fast_exp(-g)) * up[i];
  }
}

void CpuBackend::add(float* y, const float* x, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void CpuBackend::attention(std::span<const HeadAttention> batch) {
  const std::vector<HeadAttention> calls = split_query_blocks(batch);
  run_batch(
      std::span<const HeadAttention>(calls), [](const HeadAttention& a) { return a.m > 1; }, head_attention);
}

void CpuBackend::low_rank_attention(std::span<const LowRankAttention> batch) {
  run_batch(
      batch, [](const LowRankAttention& a) { return a.m > 1 || a.pre_rope_keys; }, low_rank_head_attention);
}

void CpuBackend::window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions,
                                       int64_t n_queries, int64_t group, int64_t head_dim, float scale,
                                       std::span<const KvBlockView> blocks, float* out) {
  // KeyBlock keys are f32: f16 and quantized blocks are widened into one buffer first.
  const auto in_place = [](const KvBlockView& block) {
    return block.dtype == KvDtype::kF32 && block.quant_bits == 0;
  };
  int64_t widened_size = 0;
  for (const auto& block : blocks) widened_size += in_place(block) ? 0 : block.n * head_dim;
  std::vector<float> widened(static_cast<size_t>(widened_size)), unused_values;
  std::vector<KeyBlock> keys;
  keys.reserve(blocks.size());
  float* next = widened.data();
  for (const auto& block : blocks) {
    if (in_place(block)) {
      keys.push_back({static_cast<const float*>(block.keys), block.positions, block.n});
      continue;
    }
    if (block.quant_bits != 0) {
      unused_values.resize(static_cast<size_t>(block.n * head_dim));
      dequantize_kivi_group(static_cast<const std::byte*>(block.keys), head_dim, block.quant_group,
                            block.quant_bits, block.n, next, unused_values.data());
    } else {
      kv_to_f32(block.keys, block.dtype, next, block.n * head_dim);
    }
    keys.push_back({next, block.positions, block.n});
    next += block.n * head_dim;
  }
  cpu::window_attention_mean(q, q_stride, q_positions, n_queries, group, head_dim, scale, keys, out);
}

void CpuBackend::embedding_rows(const Weight& w, const int32_t* tokens, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) dequantize_row(w.dtype(), w.row(tokens[i]), out + i * w.cols(), w.cols());
}

void* CpuBackend::allocate_kv_memory(uint64_t bytes) {
  return ::operator new (bytes, std::align_val_t{64});
}

void CpuBackend::free_kv_memory(void* memory, uint64_t) {
  ::operator delete (memory, std::align_val_t{64});
}

}  // namespace kvshrink::kernels::cpu
