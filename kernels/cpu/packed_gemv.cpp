#include "kernels/cpu/packed_gemv.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemm_small_threads.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"

namespace kvshrink::kernels::cpu {
namespace {

constexpr int kBlock = 32;  // columns per step of the tile loop: one Q4_1 / Q8_0 block

#if defined(KVSHRINK_SIMD_AVX512)
// tile of kTileTokens activation rows x kTileRows weight rows: 20 accumulators, 8 registers of
// converted weights, one of activations (measured best of 8x2, 6x3, 4x4, 5x4 for m = 8..32)
constexpr int kTileTokens = 5, kTileRows = 4;
#else
constexpr int kTileTokens = 4, kTileRows = 1;  // AVX2: 16 registers: 4 accumulators, 4 weights
#endif
constexpr int kVecs = kBlock / kLanes;  // registers per block

float half(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return fp16_to_fp32(h);
#endif
}

// A weight's rows as the tile loop reads them: block(r, b, out) puts columns 32b..32b+31 of row r
// in out[0..kVecs) (column 32b + kLanes*v + lane in out[v]). prepare(r, n) is called before rows
// r..r+n-1 are read; prefetch(r, b) fetches block b of weight_prefetch_row(r) as row r is read;
// add_tail adds the columns after the last whole block (none for Q4_1/Q8_0).
struct Q4_1Rows {
  const Weight& w;
  void prepare(int64_t, int) {}
  void prefetch(int64_t r, int64_t b) const {
    __builtin_prefetch(w.row(weight_prefetch_row(r, w.rows())) + b * sizeof(BlockQ4_1));
  }
  void add_tail(int64_t, int, const float*, int64_t, int64_t, float*, int64_t) const {}
  void block(int64_t r, int64_t b, Vec* out) const {
    const BlockQ4_1& q = reinterpret_cast<const BlockQ4_1*>(w.row(r))[b];
#if defined(KVSHRINK_SIMD_AVX512)
    // table[v] = v * d + m; lane j of `bytes` holds qs[j] = element j | element j + 16 << 4, and
    // permutexvar reads the low 4 bits of each lane
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 table = _mm512_fmadd_ps(iota, _mm512_set1_ps(half(q.d)), _mm512_set1_ps(half(q.m)));
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q.qs)));
    out[0] = _mm512_permutexvar_ps(bytes, table);
    out[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
#elif defined(KVSHRINK_SIMD_AVX2)
    const __m256 d = _mm256_set1_ps(half(q.d)), m = _mm256_set1_ps(half(q.m));
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q.qs));
    const __m128i low = _mm_and_si128(packed, nibble);                      // elements 0..15
    const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);  // elements 16..31
    const __m128i eights[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
    for (int v = 0; v < 4; ++v) {
      out[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eights[v])), d, m);
    }
#else
    const float d = half(q.d), m = half(q.m);
    for (int j = 0; j < kBlock / 2; ++j) {
      out[j] = static_cast<float>(q.qs[j] & 0xF) * d + m;
      out[j + 16] = static_cast<float>(q.qs[j] >> 4) * d + m;
    }
#endif
  }
};

struct Q8_0Rows {
  const Weight& w;
  void prepare(int64_t, int) {}
  void prefetch(int64_t r, int64_t b) const {
    __builtin_prefetch(w.row(weight_prefetch_row(r, w.rows())) + b * sizeof(BlockQ8_0));
  }
  void add_tail(int64_t, int, const float*, int64_t, int64_t, float*, int64_t) const {}
  void block(int64_t r, int64_t b, Vec* out) const {
    const BlockQ8_0& q = reinterpret_cast<const BlockQ8_0*>(w.row(r))[b];
#if defined(KVSHRINK_SIMD_AVX512)
    const __m512 d = _mm512_set1_ps(half(q.d));
    for (int v = 0; v < 2; ++v) {
      const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q.qs + 16 * v));
      out[v] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8)), d);
    }
#elif defined(KVSHRINK_SIMD_AVX2)
    const __m256 d = _mm256_set1_ps(half(q.d));
    for (int v = 0; v < 4; ++v) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q.qs + 8 * v));
      out[v] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d);
    }
#else
    const float d = half(q.d);
    for (int j = 0; j < kBlock; ++j) out[j] = static_cast<float>(q.qs[j]) * d;
#endif
  }
};

// Any other packing: prepare() dequantizes the rows into the thread's scratch [n x cols].
thread_local std::vector<float> dequantized;
struct DequantizedRows {
  const Weight& w;
  int64_t first = 0;
  void prepare(int64_t r, int n) {
    first = r;
    dequantized.resize(static_cast<size_t>(n * w.cols()));
    for (int j = 0; j < n; ++j)
      dequantize_row(w.dtype(), w.row(r + j), dequantized.data() + j * w.cols(), w.cols());
  }
  void prefetch(int64_t, int64_t) const {}  // the scratch rows are in cache
  void block(int64_t r, int64_t b, Vec* out) const {
    const float* p = dequantized.data() + (r - first) * w.cols() + b * kBlock;
    for (int v = 0; v < kVecs; ++v) out[v] = vload(p + v * kLanes);
  }
  // y[i * ldy + j] += columns after the whole blocks, for i < tokens, j < n
  void add_tail(int64_t r, int n, const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy) const {
    for (int64_t c = w.cols() / kBlock * kBlock; c < w.cols(); ++c) {
      for (int j = 0; j < n; ++j) {
        const float wc = dequantized[(r + j - first) * w.cols() + c];
        for (int64_t i = 0; i < tokens; ++i) y[i * ldy + j] += wc * x[i * ldx + c];
      }
    }
  }
};

// y[i * ldy + j] = row r + j of w . row i of x, for i < kT, j < kR, over n_blocks blocks: each
// block of the kR weight rows is converted once and multiplied with all kT activation rows.
template <int kR, int kT, class Rows>
void tile(const Rows& rows, int64_t r, int64_t n_blocks, const float* x, int64_t ldx, float* y, int64_t ldy) {
  Vec acc[kT][kR];
  for (auto& a : acc) std::fill(a, a + kR, vzero());
  for (int64_t b = 0; b < n_blocks; ++b) {
    Vec wv[kR][kVecs];
#pragma GCC unroll 8
    for (int j = 0; j < kR; ++j) {
      rows.prefetch(r + j, b);
      rows.block(r + j, b, wv[j]);
    }
#pragma GCC unroll 32
    for (int v = 0; v < kVecs; ++v) {
#pragma GCC unroll 8
      for (int i = 0; i < kT; ++i) {
        const Vec xv = vload(x + i * ldx + b * kBlock + v * kLanes);
#pragma GCC unroll 8
        for (int j = 0; j < kR; ++j) acc[i][j] = vfma(wv[j][v], xv, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < kT; ++i) {
    for (int j = 0; j < kR; ++j) y[i * ldy + j] = vsum(acc[i][j]);
  }
}

// tile<kR, t> for a run-time t in 1..kT
template <int kR, int kT, class Rows>
void tile_up_to(int t, const Rows& rows, int64_t r, int64_t n_blocks, const float* x, int64_t ldx, float* y,
                int64_t ldy) {
  if constexpr (kT > 1) {
    if (t < kT) return tile_up_to<kR, kT - 1>(t, rows, r, n_blocks, x, ldx, y, ldy);
  }
  tile<kR, kT>(rows, r, n_blocks, x, ldx, y, ldy);
}

// n weight rows from r (n <= kR) times all m tokens: y[m x w.rows()], x[m x w.cols()]
template <int kR, int kT, class Rows>
void row_group(Rows& rows, int64_t r, int n, const float* x, float* y, int64_t m) {
  const int64_t cols = rows.w.cols(), n_rows = rows.w.rows();
  rows.prepare(r, n);
  for (int64_t t = 0; t < m; t += kT) {
    const int tokens = static_cast<int>(std::min<int64_t>(kT, m - t));
    const float* xt = x + t * cols;
    float* yt = y + t * n_rows + r;
    if (n == kR) {
      tile_up_to<kR, kT>(tokens, rows, r, cols / kBlock, xt, cols, yt, n_rows);
    } else {
      for (int j = 0; j < n; ++j)
        tile_up_to<1, kT>(tokens, rows, r + j, cols / kBlock, xt, cols, yt + j, n_rows);
    }
    rows.add_tail(r, n, xt, cols, tokens, yt, n_rows);
  }
}

// Output rows split into tasks of whole kR-row groups, ~32 tasks per call (at least 16 rows each)
// taken by the compute threads in turn.
template <int kR, int kT, class Rows>
void gemm(Rows rows, const float* x, float* y, int64_t m) {
  const int64_t n_rows = rows.w.rows();
  const int64_t per_task = std::max<int64_t>(16, (n_rows + 32 * kR * 4 - 1) / (32 * kR * 4) * kR * 4);
  run_on_compute_threads((n_rows + per_task - 1) / per_task, [&](int64_t task) {
    Rows local = rows;
    const int64_t end = std::min(n_rows, (task + 1) * per_task);
    for (int64_t r = task * per_task; r < end; r += kR) {
      row_group<kR, kT>(local, r, static_cast<int>(std::min<int64_t>(kR, end - r)), x, y, m);
    }
  });
}

template <class Rows>
void gemm_any_m(Rows rows, const float* x, float* y, int64_t m) {
  if constexpr (kTileRows < 2) {  // one or two tokens: two weight rows for two accumulator chains
    if (m <= 2) return gemm<2, 2>(rows, x, y, m);
  }
  gemm<kTileRows, kTileTokens>(rows, x, y, m);
}

}  // namespace

void packed_gemm(const Weight& w, const float* x, float* y, int64_t m) {
  switch (w.dtype()) {
    case TensorType::Q4_1:
      return gemm_any_m(Q4_1Rows{w}, x, y, m);
    case TensorType::Q8_0:
      return gemm_any_m(Q8_0Rows{w}, x, y, m);
    default:
      return gemm_any_m(DequantizedRows{w}, x, y, m);
  }
}

}  // namespace kvshrink::kernels::cpu
