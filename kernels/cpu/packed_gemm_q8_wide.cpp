#include "kernels/cpu/packed_gemm_q8_wide.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemm_small_threads.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"

#if defined(KVSHRINK_SIMD_AVX512) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define KVSHRINK_Q8_WIDE 1
#endif

namespace kvshrink::kernels::cpu {

#if defined(KVSHRINK_Q8_WIDE)
namespace {

constexpr int kRowLanes = 16;          // activation rows per register
constexpr int kRows = 12;              // weight rows per panel: 12 int32 + 12 f32 accumulators
constexpr int kGroups = kQ8Block / 4;  // int32 lanes of 4 bytes per block

// The activations, transposed: row t of group g (columns 4g..4g+3) at g * ld + t.
struct WideActivations {
  int64_t ld = 0;               // a.m rounded up to kRowLanes; rows past a.m are zero
  std::vector<uint32_t> bytes;  // [cols / 4 x ld]: 4 bytes q_a + 128
  std::vector<float> d, s;      // [blocks x ld]
};

void transpose(const Q8Activations& a, WideActivations& out) {
  const int64_t blocks = a.blocks(), groups = a.cols / 4;
  out.ld = (a.m + kRowLanes - 1) / kRowLanes * kRowLanes;
  out.bytes.assign(static_cast<size_t>(groups * out.ld), 0);
  out.d.assign(static_cast<size_t>(blocks * out.ld), 0.0f);
  out.s.assign(static_cast<size_t>(blocks * out.ld), 0.0f);
  for (int64_t t = 0; t < a.m; ++t) {
    const int8_t* q = a.q.data() + t * a.cols;
    for (int64_t g = 0; g < groups; ++g) {
      uint32_t word;
      std::memcpy(&word, q + 4 * g, 4);
      out.bytes[g * out.ld + t] = word ^ 0x80808080u;  // + 128 per byte
    }
    for (int64_t b = 0; b < blocks; ++b) {
      out.d[b * out.ld + t] = a.d[t * blocks + b];
      out.s[b * out.ld + t] = a.s[t * blocks + b];
    }
  }
}

// kRows weight rows unpacked: block b of row j at b * kRows + j.
struct Panel {
  std::vector<int8_t> q;       // [blocks x kRows x 32]: the block's q_w in column order
  std::vector<float> d, m;     // [blocks x kRows]
  std::vector<int32_t> start;  // [blocks x kRows]: -128 * sum_j q_w,j
  void resize(int64_t blocks) {
    q.resize(static_cast<size_t>(blocks * kRows * kQ8Block));
    d.resize(static_cast<size_t>(blocks * kRows));
    m.resize(static_cast<size_t>(blocks * kRows));
    start.resize(static_cast<size_t>(blocks * kRows));
  }
};

int32_t byte_sum(__m128i u8) {  // sum of 16 unsigned bytes
  const __m128i halves = _mm_sad_epu8(u8, _mm_setzero_si128());
  return _mm_cvtsi128_si32(halves) + _mm_extract_epi32(halves, 2);
}

void unpack(const BlockQ4_1& w, int8_t* q, float& d, float& m, int32_t& start) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_and_si128(packed, nibble);                      // elements 0..15
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);  // elements 16..31
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), low);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), high);
  d = _cvtsh_ss(w.d);
  m = _cvtsh_ss(w.m);
  start = -128 * (byte_sum(low) + byte_sum(high));
}

void unpack(const BlockQ8_0& w, int8_t* q, float& d, float& m, int32_t& start) {
  const __m128i offset = _mm_set1_epi8(static_cast<char>(0x80));
  int32_t sum = -kQ8Block * 128;  // of the bytes + 128
  for (int half = 0; half < 2; ++half) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs + 16 * half));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * half), bytes);
    sum += byte_sum(_mm_xor_si128(bytes, offset));
  }
  d = _cvtsh_ss(w.d);
  m = 0.0f;
  start = -128 * sum;
}

template <class Block>
void fill(const Weight& w, int64_t r, int n, Panel& panel) {
  const int64_t blocks = w.cols() / kQ8Block;
  for (int j = 0; j < n; ++j) {
    const auto* row = reinterpret_cast<const Block*>(w.row(r + j));
    const auto* ahead = reinterpret_cast<const uint8_t*>(w.row(weight_prefetch_row(r + j, w.rows())));
    for (int64_t b = 0; b < blocks; ++b) {
      __builtin_prefetch(ahead + b * sizeof(Block));
      const int64_t at = b * kRows + j;
      unpack(row[b], panel.q.data() + at * kQ8Block, panel.d[at], panel.m[at], panel.start[at]);
    }
  }
}

// y[t * ldy + j] = weight row j . activation row t0 + t, for j < kR, t < rows (<= kRowLanes).
template <int kR, bool kHasMin>
void tile(const Panel& panel, int64_t blocks, const WideActivations& a, int64_t t0, int rows, float* y,
          int64_t ldy) {
  __m512 acc[kR];
  std::fill(acc, acc + kR, _mm512_setzero_ps());
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i dot[kR];
#pragma GCC unroll 12
    for (int j = 0; j < kR; ++j) dot[j] = _mm512_set1_epi32(panel.start[b * kRows + j]);
    const int8_t* q = panel.q.data() + b * kRows * kQ8Block;
#pragma GCC unroll 8
    for (int g = 0; g < kGroups; ++g) {
      const __m512i x = _mm512_loadu_si512(a.bytes.data() + (b * kGroups + g) * a.ld + t0);
#pragma GCC unroll 12
      for (int j = 0; j < kR; ++j) {
        int32_t word;
        std::memcpy(&word, q + j * kQ8Block + 4 * g, 4);
        dot[j] = _mm512_dpbusd_epi32(dot[j], x, _mm512_set1_epi32(word));
      }
    }
    const __m512 da = _mm512_loadu_ps(a.d.data() + b * a.ld + t0);
    const __m512 sa = _mm512_loadu_ps(a.s.data() + b * a.ld + t0);
#pragma GCC unroll 12
    for (int j = 0; j < kR; ++j) {
      const __m512 scale = _mm512_mul_ps(da, _mm512_set1_ps(panel.d[b * kRows + j]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), scale, acc[j]);
      if constexpr (kHasMin) acc[j] = _mm512_fmadd_ps(sa, _mm512_set1_ps(panel.m[b * kRows + j]), acc[j]);
    }
  }
  alignas(64) float lanes[kRowLanes];
  for (int j = 0; j < kR; ++j) {
    _mm512_store_ps(lanes, acc[j]);
    for (int t = 0; t < rows; ++t) y[t * ldy + j] = lanes[t];
  }
}

// tile<n> for a run-time n in 1..kR
template <int kR, bool kHasMin>
void tile_up_to(int n, const Panel& panel, int64_t blocks, const WideActivations& a, int64_t t0, int rows,
                float* y, int64_t ldy) {
  if constexpr (kR > 1) {
    if (n < kR) return tile_up_to<kR - 1, kHasMin>(n, panel, blocks, a, t0, rows, y, ldy);
  }
  tile<kR, kHasMin>(panel, blocks, a, t0, rows, y, ldy);
}

thread_local WideActivations transposed;
thread_local Panel panel;

// Output rows split into ~32 tasks of whole panels, taken by the compute threads in turn.
template <class Block>
void threaded(const Weight& w, const Q8Activations& a, float* y) {
  constexpr bool kHasMin = std::is_same_v<Block, BlockQ4_1>;
  transpose(a, transposed);
  const WideActivations& x = transposed;
  const int64_t n_rows = w.rows(), blocks = a.blocks();
  const int64_t per_task = std::max<int64_t>(kRows, (n_rows + 32 * kRows - 1) / (32 * kRows) * kRows);
  run_on_compute_threads((n_rows + per_task - 1) / per_task, [&](int64_t task) {
    const int64_t end = std::min(n_rows, (task + 1) * per_task);
    panel.resize(blocks);
    for (int64_t r = task * per_task; r < end; r += kRows) {
      const int n = static_cast<int>(std::min<int64_t>(kRows, end - r));
      fill<Block>(w, r, n, panel);
      for (int64_t t = 0; t < a.m; t += kRowLanes) {
        const int rows = static_cast<int>(std::min<int64_t>(kRowLanes, a.m - t));
        tile_up_to<kRows, kHasMin>(n, panel, blocks, x, t, rows, y + t * n_rows + r, n_rows);
      }
    }
  });
}

}  // namespace
#endif

bool packed_gemm_q8_wide_available() {
#if defined(KVSHRINK_Q8_WIDE)
  return true;
#else
  return false;
#endif
}

void packed_gemm_q8_wide(const Weight& w, const Q8Activations& a, float* y) {
#if defined(KVSHRINK_Q8_WIDE)
  if (w.dtype() == TensorType::Q4_1) return threaded<BlockQ4_1>(w, a, y);
  if (w.dtype() == TensorType::Q8_0) return threaded<BlockQ8_0>(w, a, y);
#endif
  (void)w, (void)a, (void)y;
  throw std::invalid_argument("packed_gemm_q8_wide: needs AVX-512 VNNI and Q4_1 / Q8_0 weights");
}

}  // namespace kvshrink::kernels::cpu
