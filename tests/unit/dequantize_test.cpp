// Dequantization of hand-built GGML blocks (bytes written out, expected values worked out by hand
// from the layouts in kernels/cpu/quant_blocks.h), fp16/bf16 conversion, and quantize round trips.
#include "kernels/cpu/dequantize.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quantize.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvshrink::kernels::cpu {
namespace {

std::vector<float> dequantize(TensorType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(type, bytes.data(), out.data(), n);
  return out;
}

// Little-endian bytes of an fp16 bit pattern.
void put_fp16(std::vector<uint8_t>& bytes, uint16_t h) {
  bytes.push_back(static_cast<uint8_t>(h & 0xFF));
  bytes.push_back(static_cast<uint8_t>(h >> 8));
}

constexpr uint16_t kHalfOne = 0x3C00;       // 1.0
constexpr uint16_t kHalfHalf = 0x3800;      // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;   // 0.25
constexpr uint16_t kHalfMinusOne = 0xBC00;  // -1.0

TEST(Dequantize, F32IsACopy) {
  const std::vector<float> values{1.5f, -2.0f, 0.0f, 3.25e-7f, -1e30f};
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  EXPECT_EQ(dequantize(TensorType::F32, bytes, 5), values);
}

TEST(Dequantize, F16IncludingSubnormalsAndInfinities) {
  // 11 values: exercises the 8-wide path and the scalar tail.
  const std::vector<uint16_t> halves{0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x03FF,
                                     0x0400, 0x7C00, 0xFC00, 0x8000, 0x3A00};
  const std::vector<float> expected{1.0f,
                                    -2.0f,
                                    0.333251953125f,         // (1 + 341 / 1024) * 2^-2
                                    65504.0f,                // largest finite half
                                    5.9604644775390625e-8f,  // 2^-24, smallest subnormal
                                    6.097555160522461e-5f,   // 1023 * 2^-24, largest subnormal
                                    6.103515625e-5f,         // 2^-14, smallest normal
                                    std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity(),
                                    -0.0f,
                                    0.75f};
  std::vector<uint8_t> bytes;
  for (const uint16_t h : halves) put_fp16(bytes, h);
  const std::vector<float> out = dequantize(TensorType::F16, bytes, 11);
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(expected[i])) << "element " << i;
  }
  std::vector<uint8_t> nan;
  put_fp16(nan, 0x7E00);
  EXPECT_TRUE(std::isnan(dequantize(TensorType::F16, nan, 1)[0]));
}

TEST(Dequantize, BF16IsTheUpperHalfOfAFloat) {
  std::vector<uint8_t> bytes;
  for (const uint16_t b : {0x3F80, 0xC040, 0x4049, 0x0001}) put_fp16(bytes, static_cast<uint16_t>(b));
  const std::vector<float> out = dequantize(TensorType::BF16, bytes, 4);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], 3.140625f);
  EXPECT_EQ(out[3], std::bit_cast<float>(0x00010000u));  // a float subnormal
}

TEST(Dequantize, Q4_0LowNibblesFirst) {
  // d = 0.5; y = (q - 8) * d. Byte j holds element j (low nibble) and element j + 16 (high nibble).
  std::vector<uint8_t> bytes;
  put_fp16(bytes, kHalfHalf);
  std::vector<uint8_t> qs(16, 0x88);  // q = 8 -> 0.0
  qs[0] = 0xF0;                       // element 0: q 0 -> -4.0; element 16: q 15 -> 3.5
  qs[1] = 0x89;                       // element 1: q 9 -> 0.5;  element 17: q 8 -> 0.0
  qs[15] = 0x1E;                      // element 15: q 14 -> 3.0; element 31: q 1 -> -3.5
  bytes.insert(bytes.end(), qs.begin(), qs.end());
  std::vector<float> expected(32, 0.0f);
  expected[0] = -4.0f;
  expected[16] = 3.5f;
  expected[1] = 0.5f;
  expected[15] = 3.0f;
  expected[31] = -3.5f;
  EXPECT_EQ(dequantize(TensorType::Q4_0, bytes, 32), expected);
}

TEST(Dequantize, Q4_1TwoBlocks) {
  // Block 0: d = 0.25, m = -1; y = q * d + m.
  std::vector<uint8_t> bytes;
  put_fp16(bytes, kHalfQuarter);
  put_fp16(bytes, kHalfMinusOne);
  std::vector<uint8_t> qs(16, 0x00);  // q = 0 -> -1.0
  qs[0] = 0x5A;                       // element 0: q 10 -> 1.5;   element 16: q 5 -> 0.25
  qs[15] = 0xF3;                      // element 15: q 3 -> -0.25; element 31: q 15 -> 2.75
  bytes.insert(bytes.end(), qs.begin(), qs.end());
  // Block 1: d = 1, m = 0.5, every byte 0x21 -> elements 0..15 = 1.5, elements 16..31 = 2.5.
  put_fp16(bytes, kHalfOne);
  put_fp16(bytes, kHalfHalf);
  bytes.insert(bytes.end(), 16, 0x21);

  std::vector<float> expected(64, -1.0f);
  expected[0] = 1.5f;
  expected[16] = 0.25f;
  expected[15] = -0.25f;
  expected[31] = 2.75f;
  for (int i = 32; i < 48; ++i) expected[i] = 1.5f;
  for (int i = 48; i < 64; ++i) expected[i] = 2.5f;
  EXPECT_EQ(dequantize(TensorType::Q4_1, bytes, 64), expected);
}

TEST(Dequantize, Q8_0) {
  std::vector<uint8_t> bytes;
  put_fp16(bytes, kHalfHalf);
  std::vector<uint8_t> qs(32, 0);
  qs[0] = 127;    // 63.5
  qs[1] = 0x80;   // -128 -> -64.0
  qs[31] = 0xFD;  // -3 -> -1.5
  bytes.insert(bytes.end(), qs.begin(), qs.end());
  std::vector<float> expected(32, 0.0f);
  expected[0] = 63.5f;
  expected[1] = -64.0f;
  expected[31] = -1.5f;
  EXPECT_EQ(dequantize(TensorType::Q8_0, bytes, 32), expected);
}

TEST(Dequantize, Q4_K) {
  // d = 1, dmin = 0.5; sub-block j: y = d * sc_j * q - dmin * m_j with
  //   sc = {1, 2, 3, 4, 5, 17, 33, 63}, m = {0, 1, 2, 3, 4, 20, 40, 63}.
  std::vector<uint8_t> bytes;
  put_fp16(bytes, kHalfOne);
  put_fp16(bytes, kHalfHalf);
  // scales[0..3] = sc_0..3 | (sc_4..7 >> 4) << 6; scales[4..7] = m_0..3 | (m_4..7 >> 4) << 6;
  // scales[8..11] = (sc_4..7 & 0xF) | (m_4..7 & 0xF) << 4.
  const std::vector<uint8_t> scales{0x01, 0x42, 0x83, 0xC4, 0x00, 0x41, 0x82, 0xC3, 0x45, 0x41, 0x81, 0xFF};
  bytes.insert(bytes.end(), scales.begin(), scales.end());
  std::vector<uint8_t> qs(128, 0x00);
  qs[0] =
      0x21;  // element 0 (sub-block 0, q 1): 1 - 0 = 1;        element 32 (sub-block 1, q 2): 4 - 0.5 = 3.5
  qs[37] = 0xF7;  // element 69 (sub-block 2, q 7): 21 - 1 = 20;     element 101 (sub-block 3, q 15): 60 - 1.5
                  // = 58.5
  qs[64] =
      0x1F;  // element 128 (sub-block 4, q 15): 75 - 2 = 73;   element 160 (sub-block 5, q 1): 17 - 10 = 7
  qs[127] =
      0xAF;  // element 223 (sub-block 6, q 15): 495 - 20 = 475; element 255 (sub-block 7, q 10): 630 - 31.5
  bytes.insert(bytes.end(), qs.begin(), qs.end());
  ASSERT_EQ(bytes.size(), sizeof(BlockQ4_K));

  const float q0_value[8] = {0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -10.0f, -20.0f, -31.5f};  // -dmin * m_j
  std::vector<float> expected(256);
  for (int i = 0; i < 256; ++i) expected[i] = q0_value[i / 32];
  expected[0] = 1.0f;
  expected[32] = 3.5f;
  expected[69] = 20.0f;
  expected[101] = 58.5f;
  expected[128] = 73.0f;
  expected[160] = 7.0f;
  expected[223] = 475.0f;
  expected[255] = 598.5f;
  EXPECT_EQ(dequantize(TensorType::Q4_K, bytes, 256), expected);
}

TEST(Dequantize, Q6_K) {
  // d = 0.5, scales = {1, 2, ..., 15, -2}; element e uses scales[e / 16]; y = d * scale * (q - 32).
  // With ql = qh = 0 every q is 0, so y = -16 * scales[e / 16].
  std::vector<uint8_t> ql(128, 0), qh(64, 0);
  ql[0] = 0x0F;  // element 0: low nibble 15, qh[0] bits 0-1 = 3 -> q 63 -> 0.5 * 1 * 31 = 15.5
  qh[0] = 0x03;
  ql[33] = 0x05;   // element 33 (half 0, l 1, +32): ql[l + 32] low nibble 5, qh[1] bits 2-3 = 2
  qh[1] = 0x08;    //   -> q 37 -> 0.5 * scales[2] (3) * 5 = 7.5
  ql[84] = 0xA0;   // element 212 (half 1, l 20, +64): ql[64 + 20] high nibble 10, qh[32 + 20] bits 4-5 = 3
  qh[52] = 0x30;   //   -> q 58 -> 0.5 * scales[13] (14) * 26 = 182
  ql[127] = 0x30;  // element 255 (half 1, l 31, +96): ql[64 + 63] high nibble 3, qh[63] bits 6-7 = 1
  qh[63] = 0x40;   //   -> q 19 -> 0.5 * -2 * -13 = 13
  std::vector<uint8_t> bytes(ql);
  bytes.insert(bytes.end(), qh.begin(), qh.end());
  const std::vector<int8_t> scales{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, -2};
  for (const int8_t s : scales) bytes.push_back(static_cast<uint8_t>(s));
  put_fp16(bytes, kHalfHalf);
  ASSERT_EQ(bytes.size(), sizeof(BlockQ6_K));

  std::vector<float> expected(256);
  for (int e = 0; e < 256; ++e) expected[e] = -16.0f * scales[e / 16];
  expected[0] = 15.5f;
  expected[33] = 7.5f;
  expected[212] = 182.0f;
  expected[255] = 13.0f;
  EXPECT_EQ(dequantize(TensorType::Q6_K, bytes, 256), expected);
}

TEST(Dequantize, RejectsPartialBlocks) {
  std::vector<uint8_t> bytes(sizeof(BlockQ4_1), 0);
  float out[32];
  EXPECT_THROW(dequantize_row(TensorType::Q4_1, bytes.data(), out, 31), std::invalid_argument);
  EXPECT_THROW(dequantize_row(TensorType::Q4_K, bytes.data(), out, 32), std::invalid_argument);
  EXPECT_THROW(dequantize_row(TensorType::F32, bytes.data(), out, -1), std::invalid_argument);
}

TEST(Fp16, KnownValues) {
  EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x8001), -0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x0200), 0x1p-15f);  // subnormal 512 * 2^-24
  EXPECT_EQ(fp16_to_fp32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7C01)));

  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);  // below the halfway point 65520
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // tie rounds to even: infinity
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);      // tie to even (down)
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie to even (up)
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
  EXPECT_EQ(fp32_to_fp16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);  // tie to even: zero
  EXPECT_EQ(fp32_to_fp16(0x1p-25f * 1.0001f), 0x0001);
  EXPECT_EQ(fp32_to_fp16(3 * 0x1p-25f), 0x0002);        // 1.5 units: tie to even 2
  EXPECT_EQ(fp32_to_fp16(1023.5f * 0x1p-24f), 0x0400);  // rounds up into the smallest normal
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
  const uint16_t nan = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

TEST(Fp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto half = static_cast<uint16_t>(h);
    if ((half & 0x7C00) == 0x7C00 && (half & 0x03FF) != 0) continue;  // NaN
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(half)), half) << "half 0x" << std::hex << h;
  }
}

#if defined(__F16C__)
TEST(Fp16, MatchesHardwareConversion) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float hardware = _cvtsh_ss(static_cast<unsigned short>(h));
    const float software = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(hardware)) {
      ASSERT_TRUE(std::isnan(software));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(software), std::bit_cast<uint32_t>(hardware)) << h;
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 1'000'000; ++i) {
    const auto bits = static_cast<uint32_t>(rng());
    const float f = std::bit_cast<float>(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))
        << "float bits 0x" << std::hex << bits;
  }
}
#endif

TEST(Bf16, Conversion) {
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0xFF80), -std::numeric_limits<float>::infinity());
}

std::vector<float> random_values(size_t n, float low, float high, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

TEST(Quantize, Q8_0RoundTripWithinHalfAStep) {
  const std::vector<float> x = random_values(32 * 64, -3.0f, 2.0f, 1);
  std::vector<BlockQ8_0> blocks(64);
  quantize_row_q8_0(x.data(), blocks.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(TensorType::Q8_0, blocks.data(), y.data(), static_cast<int64_t>(y.size()));
  for (size_t b = 0; b < 64; ++b) {
    float max_abs = 0.0f;
    for (int j = 0; j < 32; ++j) max_abs = std::max(max_abs, std::fabs(x[32 * b + j]));
    const float step = max_abs / 127.0f;
    // Half a step from rounding, plus the fp16 rounding of d (relative 2^-11) times |q| <= 127.
    const float bound = 0.5f * step + 127.0f * step * 0x1p-11f;
    for (int j = 0; j < 32; ++j) ASSERT_NEAR(y[32 * b + j], x[32 * b + j], bound) << "block " << b;
  }
}

TEST(Quantize, Q4_1RoundTripWithinHalfAStep) {
  const std::vector<float> x = random_values(32 * 64, -1.0f, 3.0f, 2);
  std::vector<BlockQ4_1> blocks(64);
  quantize_row_q4_1(x.data(), blocks.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(TensorType::Q4_1, blocks.data(), y.data(), static_cast<int64_t>(y.size()));
  for (size_t b = 0; b < 64; ++b) {
    float min = x[32 * b], max = x[32 * b];
    for (int j = 0; j < 32; ++j) {
      min = std::min(min, x[32 * b + j]);
      max = std::max(max, x[32 * b + j]);
    }
    const float step = (max - min) / 15.0f;
    // Half a step, plus fp16 rounding of d (times q <= 15) and of m (relative 2^-11 each).
    const float bound = 0.5f * step + 15.0f * step * 0x1p-11f + std::fabs(min) * 0x1p-11f + 1e-6f;
    for (int j = 0; j < 32; ++j) ASSERT_NEAR(y[32 * b + j], x[32 * b + j], bound) << "block " << b;
  }
}

TEST(Quantize, Q4_0RoundTripWithinOneStep) {
  const std::vector<float> x = random_values(32 * 64, -2.0f, 2.0f, 3);
  std::vector<BlockQ4_0> blocks(64);
  quantize_row_q4_0(x.data(), blocks.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(TensorType::Q4_0, blocks.data(), y.data(), static_cast<int64_t>(y.size()));
  for (size_t b = 0; b < 64; ++b) {
    float max_abs = 0.0f;
    for (int j = 0; j < 32; ++j) max_abs = std::max(max_abs, std::fabs(x[32 * b + j]));
    // The side opposite the largest magnitude is clamped at q = 15, so up to one full step off.
    const float step = max_abs / 8.0f;
    for (int j = 0; j < 32; ++j) ASSERT_NEAR(y[32 * b + j], x[32 * b + j], step * 1.01f) << "block " << b;
  }
}

TEST(Quantize, ConstantBlockIsExact) {
  std::vector<float> x(32, 0.75f);
  BlockQ4_1 q4_1;
  quantize_row_q4_1(x.data(), &q4_1, 32);
  EXPECT_EQ(q4_1.d, 0);
  EXPECT_EQ(q4_1.m, fp32_to_fp16(0.75f));
  std::vector<float> zeros(32, 0.0f);
  BlockQ8_0 q8_0;
  quantize_row_q8_0(zeros.data(), &q8_0, 32);
  std::vector<float> y(32);
  dequantize_row(TensorType::Q8_0, &q8_0, y.data(), 32);
  EXPECT_EQ(y, zeros);
}

TEST(Quantize, RejectsPartialBlocks) {
  std::vector<float> x(40, 1.0f);
  std::vector<BlockQ8_0> blocks(2);
  EXPECT_THROW(quantize_row_q8_0(x.data(), blocks.data(), 40), std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink::kernels::cpu
