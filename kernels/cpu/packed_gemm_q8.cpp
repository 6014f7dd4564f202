#include "kernels/cpu/packed_gemm_q8.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemm_q8_wide.h"
#include "kernels/cpu/packed_gemm_small_threads.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"

#if defined(KVSHRINK_SIMD_AVX512) && defined(__AVX512VNNI__) && defined(__AVX512VBMI__) && \
    defined(__AVX512BW__)
#define KVSHRINK_Q8_VNNI 1
#endif

namespace kvshrink::kernels::cpu {
namespace {

// Integer dot product of one weight block with one activation block (32 columns).
template <class Block>
int32_t block_dot(const Block& w, const int8_t* qa);

template <>
int32_t block_dot(const BlockQ4_1& w, const int8_t* qa) {
  int32_t sum = 0;
  for (int j = 0; j < kQK4_1 / 2; ++j) sum += (w.qs[j] & 0xF) * qa[j] + (w.qs[j] >> 4) * qa[j + 16];
  return sum;
}

template <>
int32_t block_dot(const BlockQ8_0& w, const int8_t* qa) {
  int32_t sum = 0;
  for (int j = 0; j < kQK8_0; ++j) sum += w.qs[j] * qa[j];
  return sum;
}

template <class Block>
void portable(const Weight& w, const Q8Activations& a, float* y) {
  const int64_t blocks = a.blocks();
  for (int64_t r = 0; r < w.rows(); ++r) {
    const auto* row = reinterpret_cast<const Block*>(w.row(r));
    for (int64_t i = 0; i < a.m; ++i) {
      const int8_t* qa = a.q.data() + i * a.cols;
      const float* da = a.d.data() + i * blocks;
      float sum = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        sum += fp16_to_fp32(row[b].d) * da[b] * static_cast<float>(block_dot(row[b], qa + b * kQ8Block));
        if constexpr (std::is_same_v<Block, BlockQ4_1>) sum += fp16_to_fp32(row[b].m) * a.s[i * blocks + b];
      }
      y[i * w.rows() + r] = sum;
    }
  }
}

#if defined(KVSHRINK_Q8_VNNI)
// A group is two consecutive blocks (64 columns), one register of bytes. After vpdpbusd, int32
// lane k holds the sum over columns 4k..4k+3 of the group's activation order (its 64 q_a bytes
// as stored): lanes 0..7 are block 0, lanes 8..15 block 1. A row with an odd number of blocks ends
// in a half group, loaded with masks that zero the missing block.
struct GroupMasks {
  __mmask64 weight_bytes;   // of the group's first weight register (Q8_0: bytes 0..63)
  __mmask64 weight_bytes2;  // Q8_0: bytes 64..67
  __mmask64 activation_bytes;
  __mmask16 blocks;
};

// A vpermb / vpermt2b index: byte j of the result is byte source(j) of the input.
template <class Source>
constexpr std::array<uint8_t, 64> byte_index(Source source) {
  std::array<uint8_t, 64> index{};
  for (int j = 0; j < 64; ++j) index[j] = static_cast<uint8_t>(source(j));
  return index;
}
// A vpermw index: 16-bit word j of the result is word source(j) of the input.
template <class Source>
constexpr std::array<uint16_t, 32> word_index(Source source) {
  std::array<uint16_t, 32> index{};
  for (int j = 0; j < 32; ++j) index[j] = static_cast<uint16_t>(source(j));
  return index;
}
// Q4_1: qs of block 0 (bytes 4..19) twice, then of block 1 (24..39) twice
alignas(64) constexpr auto kQ4_1Bytes = byte_index([](int j) { return (j < 32 ? 4 : 24) + j % 16; });
// Q8_0: qs of block 0 (bytes 2..33), then of block 1 (36..67; 64.. from the second register)
alignas(64) constexpr auto kQ8_0Bytes = byte_index([](int j) { return j < 32 ? 2 + j : 4 + j; });
// Q4_1 fp16 words d0 (0), m0 (1), d1 (10), m1 (11) -> d0 x8, d1 x8, m0 x8, m1 x8
alignas(64) constexpr auto kQ4_1Scales = word_index([](int j) { return (j % 16 < 8 ? 0 : 10) + j / 16; });
// Q8_0 fp16 words d0 (0), d1 (17) -> d0 x8, d1 x8 (words 16.. unused)
alignas(64) constexpr auto kQ8_0Scales = word_index([](int j) { return j % 16 < 8 ? 0 : 17; });

// lanes 0..7 = v[0], lanes 8..15 = v[1]
inline __m512i pair_lanes() {
  return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
}

// Activation row i's group g.
struct ActivationGroup {
  __m512i q;      // 64 signed bytes
  __m512 d;       // d_a of the lane's block
  __m512 extra;   // Q4_1: s_a / 8 (eight lanes per block); unused for Q8_0
  __m512i start;  // Q8_0: -16 * sum_j q_a,j (eight lanes: -128 * sum); Q4_1: 0
};

// Q4_1 group: 40 bytes, blocks {d, m, qs[16]} at 0 and 20.
struct Q4_1Group {
  __m512i q;  // unsigned nibbles in activation order
  __m512 d, m;

  static constexpr int64_t kBytes = 2 * sizeof(BlockQ4_1);
  static constexpr bool kHasMin = true;
  static constexpr GroupMasks kFull{(__mmask64{1} << 40) - 1, 0, ~__mmask64{0}, 3};
  static constexpr GroupMasks kHalf{(__mmask64{1} << 20) - 1, 0, (__mmask64{1} << 32) - 1, 1};
  static ActivationGroup activations(const int8_t* q, const float* d, const float* s, const int32_t*,
                                     const GroupMasks& k) {
    return {_mm512_maskz_loadu_epi8(k.activation_bytes, q),
            _mm512_permutexvar_ps(pair_lanes(), _mm512_maskz_loadu_ps(k.blocks, d)),
            _mm512_mul_ps(_mm512_permutexvar_ps(pair_lanes(), _mm512_maskz_loadu_ps(k.blocks, s)),
                          _mm512_set1_ps(0.125f)),
            _mm512_setzero_si512()};
  }
  static Q4_1Group load(const uint8_t* p, const GroupMasks& k) {
    // each block's qs twice; the second copy shifted by 4 bits (the high nibbles, elements
    // 16..31), then all masked to 4 bits
    const __m512i from = _mm512_load_si512(kQ4_1Bytes.data());
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    const __m512i halves = _mm512_load_si512(kQ4_1Scales.data());
    const __m512i raw = _mm512_maskz_loadu_epi8(k.weight_bytes, p);
    const __m512i scales = _mm512_permutexvar_epi16(halves, raw);
    return {_mm512_and_si512(_mm512_srlv_epi64(_mm512_permutexvar_epi8(from, raw), shift),
                             _mm512_set1_epi8(0x0F)),
            _mm512_cvtph_ps(_mm512_castsi512_si256(scales)),
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64(scales, 1))};
  }
};

// Q8_0 group: 68 bytes, blocks {d, qs[32]} at 0 and 34.
struct Q8_0Group {
  __m512i q;  // q_w + 128, unsigned
  __m512 d, m;

  static constexpr int64_t kBytes = 2 * sizeof(BlockQ8_0);
  static constexpr bool kHasMin = false;
  static constexpr GroupMasks kFull{~__mmask64{0}, (__mmask64{1} << 4) - 1, ~__mmask64{0}, 3};
  static constexpr GroupMasks kHalf{(__mmask64{1} << 34) - 1, 0, (__mmask64{1} << 32) - 1, 1};
  static ActivationGroup activations(const int8_t* q, const float* d, const float*, const int32_t* sum,
                                     const GroupMasks& k) {
    const __m512i sums = _mm512_permutexvar_epi32(pair_lanes(), _mm512_maskz_loadu_epi32(k.blocks, sum));
    return {_mm512_maskz_loadu_epi8(k.activation_bytes, q),
            _mm512_permutexvar_ps(pair_lanes(), _mm512_maskz_loadu_ps(k.blocks, d)), _mm512_setzero_ps(),
            _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sums, 4))};
  }
  static Q8_0Group load(const uint8_t* p, const GroupMasks& k) {
    const __m512i from = _mm512_load_si512(kQ8_0Bytes.data());
    const __m512i halves = _mm512_load_si512(kQ8_0Scales.data());
    const __m512i lo = _mm512_maskz_loadu_epi8(k.weight_bytes, p);
    const __m512i hi = _mm512_maskz_loadu_epi8(k.weight_bytes2, p + 64);
    const __m512i bytes = _mm512_permutex2var_epi8(lo, from, hi);
    return {_mm512_xor_si512(bytes, _mm512_set1_epi8(static_cast<char>(0x80))),
            _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(halves, lo))),
            _mm512_setzero_ps()};
  }
};

// y[i * ldy + j] = row r + j of w . activation row t0 + i, for i < kT, j < kR.
template <class Group, int kR, int kT>
void tile(const Weight& w, int64_t r, const Q8Activations& a, int64_t t0, float* y, int64_t ldy) {
  const int64_t blocks = a.blocks();
  const uint8_t *rows[kR], *prefetched[kR];
  for (int j = 0; j < kR; ++j) {
    rows[j] = reinterpret_cast<const uint8_t*>(w.row(r + j));
    prefetched[j] = reinterpret_cast<const uint8_t*>(w.row(weight_prefetch_row(r + j, w.rows())));
  }
  const int8_t* q[kT];
  const float *d[kT], *s[kT];
  const int32_t* sum[kT];
  for (int i = 0; i < kT; ++i) {
    q[i] = a.q.data() + (t0 + i) * a.cols;
    d[i] = a.d.data() + (t0 + i) * blocks;
    s[i] = a.s.data() + (t0 + i) * blocks;
    sum[i] = a.sum.data() + (t0 + i) * blocks;
  }
  __m512 acc[kT][kR];
  for (auto& row : acc) std::fill(row, row + kR, _mm512_setzero_ps());
  const auto add_group = [&](int64_t g, const GroupMasks& k) __attribute__((always_inline)) {
    Group wg[kR];
#pragma GCC unroll 8
    for (int j = 0; j < kR; ++j) {
      __builtin_prefetch(prefetched[j] + g * Group::kBytes);
      wg[j] = Group::load(rows[j] + g * Group::kBytes, k);
    }
#pragma GCC unroll 8
    for (int i = 0; i < kT; ++i) {
      const ActivationGroup ag =
          Group::activations(q[i] + 64 * g, d[i] + 2 * g, s[i] + 2 * g, sum[i] + 2 * g, k);
#pragma GCC unroll 8
      for (int j = 0; j < kR; ++j) {
        const __m512i dot = _mm512_dpbusd_epi32(ag.start, wg[j].q, ag.q);
        acc[i][j] = _mm512_fmadd_ps(wg[j].d, _mm512_mul_ps(_mm512_cvtepi32_ps(dot), ag.d), acc[i][j]);
        if constexpr (Group::kHasMin) acc[i][j] = _mm512_fmadd_ps(wg[j].m, ag.extra, acc[i][j]);
      }
    }
  };
  for (int64_t g = 0; g < blocks / 2; ++g) add_group(g, Group::kFull);
  if (blocks % 2 != 0) add_group(blocks / 2, Group::kHalf);
  for (int i = 0; i < kT; ++i) {
    for (int j = 0; j < kR; ++j) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
  }
}

// tile<kR, t> for a run-time t in 1..kT
template <class Group, int kR, int kT>
void tile_up_to(int t, const Weight& w, int64_t r, const Q8Activations& a, int64_t t0, float* y,
                int64_t ldy) {
  if constexpr (kT > 1) {
    if (t < kT) return tile_up_to<Group, kR, kT - 1>(t, w, r, a, t0, y, ldy);
  }
  tile<Group, kR, kT>(w, r, a, t0, y, ldy);
}

// Rows [first, end) of w times every activation row, kR weight rows and kT tokens per tile.
template <class Group, int kR, int kT>
void row_range(const Weight& w, int64_t first, int64_t end, const Q8Activations& a, float* y) {
  const int64_t n_rows = w.rows();
  for (int64_t t = 0; t < a.m; t += kT) {
    const int tokens = static_cast<int>(std::min<int64_t>(kT, a.m - t));
    float* yt = y + t * n_rows;
    int64_t r = first;
    for (; r + kR <= end; r += kR) tile_up_to<Group, kR, kT>(tokens, w, r, a, t, yt + r, n_rows);
    for (; r < end; ++r) tile_up_to<Group, 1, kT>(tokens, w, r, a, t, yt + r, n_rows);
  }
}

// Output rows split into ~32 tasks of whole 4-row groups (at least 16 rows each), taken by the
// compute threads in turn, as packed_gemm does.
template <class Group>
void threaded(const Weight& w, const Q8Activations& a, float* y) {
  constexpr int kR = 4;
  const int64_t n_rows = w.rows();
  const int64_t per_task = std::max<int64_t>(16, (n_rows + 32 * kR - 1) / (32 * kR) * kR);
  run_on_compute_threads((n_rows + per_task - 1) / per_task, [&](int64_t task) {
    const int64_t first = task * per_task, end = std::min(n_rows, first + per_task);
    if (a.m == 1) return row_range<Group, kR, 1>(w, first, end, a, y);
    row_range<Group, kR, 3>(w, first, end, a, y);
  });
}
#endif

void check(const Weight& w, const Q8Activations& a) {
  if (!packed_gemm_q8_supports(w.dtype()) || w.cols() != a.cols) {
    throw std::invalid_argument("packed_gemm_q8: weights of type " +
                                std::string(tensor_type_info(w.dtype()).name) + " with " +
                                std::to_string(w.cols()) + " columns for activations of " +
                                std::to_string(a.cols) + " (Q4_1 or Q8_0 and equal columns needed)");
  }
}

}  // namespace

bool packed_gemm_q8_supports(TensorType type) {
  return type == TensorType::Q4_1 || type == TensorType::Q8_0;
}

void packed_gemm_q8(const Weight& w, const Q8Activations& a, float* y) {
#if defined(KVSHRINK_Q8_VNNI)
  check(w, a);
  if (a.m >= kQ8WideMinRows && packed_gemm_q8_wide_available()) return packed_gemm_q8_wide(w, a, y);
  if (w.dtype() == TensorType::Q4_1) return threaded<Q4_1Group>(w, a, y);
  return threaded<Q8_0Group>(w, a, y);
#else
  packed_gemm_q8_portable(w, a, y);
#endif
}

void packed_gemm_q8_portable(const Weight& w, const Q8Activations& a, float* y) {
  check(w, a);
  if (w.dtype() == TensorType::Q4_1) return portable<BlockQ4_1>(w, a, y);
  portable<BlockQ8_0>(w, a, y);
}

}  // namespace kvshrink::kernels::cpu
