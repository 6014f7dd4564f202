// GGML quantized block layouts (as in ggml-common.h). Each block packs a fixed number of elements
// along ne0; fields are in file order with no padding. fp16 fields are IEEE binary16 bit patterns.
// Blocks are read in place from tensor data, which GGUF aligns to at least 8 bytes.
#pragma once

#include <algorithm>
#include <cstdint>

namespace kvshrink::kernels::cpu {

constexpr int kQK4_0 = 32;        // elements per Q4_0 block
constexpr int kQK4_1 = 32;        // elements per Q4_1 block
constexpr int kQK8_0 = 32;        // elements per Q8_0 block
constexpr int kQK_K = 256;        // elements per K-quant super-block
constexpr int kKScaleBytes = 12;  // packed 6-bit scales and mins of a Q4_K block

// Q4_0: y[j] = ((qs[j] & 0xF) - 8) * d and y[j + 16] = ((qs[j] >> 4) - 8) * d, for j < 16.
struct BlockQ4_0 {
  uint16_t d;              // fp16 scale
  uint8_t qs[kQK4_0 / 2];  // low nibbles: elements 0..15; high nibbles: elements 16..31
};
static_assert(sizeof(BlockQ4_0) == 18, "wrong Q4_0 block size");

// Q4_1: y[j] = (qs[j] & 0xF) * d + m and y[j + 16] = (qs[j] >> 4) * d + m, for j < 16.
struct BlockQ4_1 {
  uint16_t d;              // fp16 scale
  uint16_t m;              // fp16 minimum
  uint8_t qs[kQK4_1 / 2];  // low nibbles: elements 0..15; high nibbles: elements 16..31
};
static_assert(sizeof(BlockQ4_1) == 20, "wrong Q4_1 block size");

// Q8_0: y[j] = qs[j] * d.
struct BlockQ8_0 {
  uint16_t d;         // fp16 scale
  int8_t qs[kQK8_0];  // quants
};
static_assert(sizeof(BlockQ8_0) == 34, "wrong Q8_0 block size");

// Q4_K: 8 sub-blocks of 32 elements; sub-block j has a 6-bit scale sc_j and a 6-bit min m_j, and
// y = d * sc_j * q - dmin * m_j. scales[12] packs them:
//   j < 4:  sc_j = scales[j] & 63,                                  m_j = scales[j + 4] & 63
//   j >= 4: sc_j = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
//           m_j  = (scales[j + 4] >> 4)  | ((scales[j] >> 6) << 4)
// Chunk c < 4 of qs (bytes 32c..32c+31): low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
struct BlockQ4_K {
  uint16_t d;                    // fp16 super-block scale for the sub-block scales
  uint16_t dmin;                 // fp16 super-block scale for the sub-block mins
  uint8_t scales[kKScaleBytes];  // 6-bit scales and mins, packed as above
  uint8_t qs[kQK_K / 2];         // 4-bit quants
};
static_assert(sizeof(BlockQ4_K) == 144, "wrong Q4_K block size");

// Q6_K: 16 sub-blocks of 16 elements, y = d * scales[s] * (q - 32) with 6-bit q = 4 low bits from
// ql and 2 high bits from qh. Half h < 2 covers elements 128h..128h+127 using ql[64h..], qh[32h..]
// and scales[8h..]; for l < 32 and is = l / 16:
//   y[128h + l]      : ql[l] & 0xF,    qh[l] bits 0-1, scale is + 0
//   y[128h + l + 32] : ql[l + 32] & 0xF, qh[l] bits 2-3, scale is + 2
//   y[128h + l + 64] : ql[l] >> 4,     qh[l] bits 4-5, scale is + 4
//   y[128h + l + 96] : ql[l + 32] >> 4,  qh[l] bits 6-7, scale is + 6
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];      // low 4 bits of the quants
  uint8_t qh[kQK_K / 4];      // high 2 bits of the quants
  int8_t scales[kQK_K / 16];  // 8-bit sub-block scales
  uint16_t d;                 // fp16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210, "wrong Q6_K block size");

// The row whose blocks the packed matmul kernels prefetch while they read row r of a weight with
// n_rows rows: 8 rows on (two 4-row tiles; rows are contiguous), the last row near the end. A row
// is 6-16 cache lines at SmolLM2's widths, too short for the hardware prefetcher to ramp up on;
// the fetch makes one-token decode ~1.3x faster (docs/performance.md).
inline int64_t weight_prefetch_row(int64_t r, int64_t n_rows) {
  return std::min(r + 8, n_rows - 1);
}

}  // namespace kvshrink::kernels::cpu
