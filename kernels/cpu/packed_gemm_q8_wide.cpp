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
  int64_t ld = 0;               // a.m rounded up to kRowLanes; rows past a.m are zero activations
  std::vector<uint32_t> bytes;  // [cols / 4 x ld]: 4 bytes q_a (signed)
  std::vector<float> d, s;      // [blocks x ld]
};

// cols[c] = dword c of every rows[i]: a 16 x 16 transpose of 32-bit elements in three rounds
// (dwords within 128-bit lanes, qwords, then the lanes).
void transpose_16x16(const __m512i rows[16], __m512i cols[16]) {
  __m512i pairs[16], quads[16];
  for (int i = 0; i < 16; i += 2) {  // lane k of pairs[i]: rows i, i+1 at dwords 4k, 4k+1
    pairs[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
    pairs[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);  // ... at dwords 4k+2, 4k+3
  }
  for (int q = 0; q < 16; q += 4) {  // lane k of quads[q + j]: dword 4k + j of rows q..q+3
    quads[q] = _mm512_unpacklo_epi64(pairs[q], pairs[q + 2]);
    quads[q + 1] = _mm512_unpackhi_epi64(pairs[q], pairs[q + 2]);
    quads[q + 2] = _mm512_unpacklo_epi64(pairs[q + 1], pairs[q + 3]);
    quads[q + 3] = _mm512_unpackhi_epi64(pairs[q + 1], pairs[q + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // cols[4k + j]: lane k of quads[j], quads[4 + j], ..[8 + j], ..[12 + j]
    const __m512i low01 = _mm512_shuffle_i32x4(quads[j], quads[4 + j], 0x44);   // lanes 0, 1 of each
    const __m512i high01 = _mm512_shuffle_i32x4(quads[j], quads[4 + j], 0xEE);  // lanes 2, 3
    const __m512i low23 = _mm512_shuffle_i32x4(quads[8 + j], quads[12 + j], 0x44);
    const __m512i high23 = _mm512_shuffle_i32x4(quads[8 + j], quads[12 + j], 0xEE);
    cols[j] = _mm512_shuffle_i32x4(low01, low23, 0x88);
    cols[4 + j] = _mm512_shuffle_i32x4(low01, low23, 0xDD);
    cols[8 + j] = _mm512_shuffle_i32x4(high01, high23, 0x88);
    cols[12 + j] = _mm512_shuffle_i32x4(high01, high23, 0xDD);
  }
}

// Rows t0..t0+15 of out (zero activations past a.m): 16 groups at a time through the registers.
void transpose_rows(const Q8Activations& a, int64_t t0, WideActivations& out) {
  const int64_t blocks = a.blocks(), groups = a.cols / 4;
  const int rows = static_cast<int>(std::min<int64_t>(kRowLanes, a.m - t0));
  const auto word = [&](int i, int64_t g) {  // 4 bytes q_a
    uint32_t w = 0;
    if (i < rows) std::memcpy(&w, a.q.data() + (t0 + i) * a.cols + 4 * g, 4);
    return w;
  };
  int64_t g = 0;
  for (; g + 16 <= groups; g += 16) {
    __m512i in[16], cols[16];
    for (int i = 0; i < 16; ++i) {
      in[i] = i < rows ? _mm512_loadu_si512(a.q.data() + (t0 + i) * a.cols + 4 * g) : _mm512_setzero_si512();
    }
    transpose_16x16(in, cols);
    for (int c = 0; c < 16; ++c) _mm512_storeu_si512(out.bytes.data() + (g + c) * out.ld + t0, cols[c]);
  }
  for (; g < groups; ++g) {
    for (int i = 0; i < kRowLanes; ++i) out.bytes[g * out.ld + t0 + i] = word(i, g);
  }
  for (int64_t b = 0; b < blocks; ++b) {
    for (int i = 0; i < kRowLanes; ++i) {
      out.d[b * out.ld + t0 + i] = i < rows ? a.d[(t0 + i) * blocks + b] : 0.0f;
      out.s[b * out.ld + t0 + i] = i < rows ? a.s[(t0 + i) * blocks + b] : 0.0f;
    }
  }
}

// out = a transposed, 16 rows a task on the compute threads.
void transpose(const Q8Activations& a, WideActivations& out) {
  out.ld = (a.m + kRowLanes - 1) / kRowLanes * kRowLanes;
  out.bytes.resize(static_cast<size_t>(a.cols / 4 * out.ld));
  out.d.resize(static_cast<size_t>(a.blocks() * out.ld));
  out.s.resize(static_cast<size_t>(a.blocks() * out.ld));
  run_on_compute_threads(out.ld / kRowLanes, [&](int64_t task) { transpose_rows(a, task * kRowLanes, out); });
}

// kRows weight rows unpacked: block b of row j at b * kRows + j.
struct Panel {
  std::vector<int8_t> q;       // [blocks x kRows x 32]: the block's q_w in column order
  std::vector<float> d, m;     // [blocks x kRows]
  std::vector<int32_t> start;  // [blocks x kRows]: Q8_0: -128 * sum_j q_w,j (Q4_1: unused)
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

void unpack(const BlockQ4_1& w, int8_t* q, float& d, float& m, int32_t&) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_and_si128(packed, nibble);                      // elements 0..15
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);  // elements 16..31
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), low);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), high);
  d = _cvtsh_ss(w.d);
  m = _cvtsh_ss(w.m);
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
// vpdpbusd multiplies unsigned bytes with signed ones: Q4_1's q_w (0..15) are the unsigned side
// and q_a the signed one, exactly; Q8_0's q_w are signed, so q_a + 128 is the unsigned side and
// the dot starts from the panel's -128 * sum_j q_w,j.
template <int kR, bool kHasMin>
void tile(const Panel& panel, int64_t blocks, const WideActivations& a, int64_t t0, int rows, float* y,
          int64_t ldy) {
  constexpr bool kUnsignedWeights = kHasMin;  // Q4_1
  __m512 acc[kR];
  std::fill(acc, acc + kR, _mm512_setzero_ps());
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i dot[kR];
#pragma GCC unroll 12
    for (int j = 0; j < kR; ++j) {
      dot[j] = kUnsignedWeights ? _mm512_setzero_si512() : _mm512_set1_epi32(panel.start[b * kRows + j]);
    }
    const int8_t* q = panel.q.data() + b * kRows * kQ8Block;
#pragma GCC unroll 8
    for (int g = 0; g < kGroups; ++g) {
      const __m512i x = _mm512_loadu_si512(a.bytes.data() + (b * kGroups + g) * a.ld + t0);
      const __m512i x_unsigned =  // Q8_0: q_a + 128
          kUnsignedWeights ? x : _mm512_xor_si512(x, _mm512_set1_epi32(static_cast<int>(0x80808080u)));
#pragma GCC unroll 12
      for (int j = 0; j < kR; ++j) {
        int32_t word;
        std::memcpy(&word, q + j * kQ8Block + 4 * g, 4);
        const __m512i w = _mm512_set1_epi32(word);
        if constexpr (kUnsignedWeights) {
          dot[j] = _mm512_dpbusd_epi32(dot[j], w, x);
        } else {
          dot[j] = _mm512_dpbusd_epi32(dot[j], x_unsigned, w);
        }
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
