// KIVI groups (kernels/cpu/kivi_group.h): the byte count and layout of one group, round trips
// within half a step of each run's scale, exact constants and extremes, per-channel keys against an
// outlier channel, and the format checks.
#include "kernels/cpu/kivi_group.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/half_values.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::cpu::dequantize_kivi_group;
using kernels::cpu::kivi_group_bytes;
using kernels::cpu::quantize_kivi_group;
using testing::half_rounded;

struct Dequantized {
  std::vector<std::byte> bytes;
  std::vector<float> keys, values;
};

// keys, values [group x d] quantized into one group and dequantized back (all `group` tokens).
Dequantized round_trip(const std::vector<float>& keys, const std::vector<float>& values, int64_t d,
                       int64_t group, int bits) {
  Dequantized r{std::vector<std::byte>(static_cast<size_t>(kivi_group_bytes(d, group, bits))),
                std::vector<float>(keys.size()), std::vector<float>(values.size())};
  quantize_kivi_group(keys.data(), values.data(), d, group, bits, r.bytes.data());
  dequantize_kivi_group(r.bytes.data(), d, group, bits, group, r.keys.data(), r.values.data());
  return r;
}

// Largest error a run of min lo and max hi may have: half its step, plus the f16 rounding of its
// scale and zero (each within 2^-11 relative, which moves the top code by up to 2^-11 of the range).
float run_tolerance(float lo, float hi, int bits) {
  const float scale = (hi - lo) / static_cast<float>((1 << bits) - 1);
  return scale / 2 + std::ldexp(std::max(std::fabs(lo), std::fabs(hi)), -9) + 1e-6f;
}

// Checks x[i * stride] (i < n) against its dequantized y at run_tolerance; returns the largest error.
float expect_run_within_step(const float* x, const float* y, int64_t n, int64_t stride, int bits) {
  float lo = x[0], hi = x[0], worst = 0;
  for (int64_t i = 0; i < n; ++i) lo = std::min(lo, x[i * stride]), hi = std::max(hi, x[i * stride]);
  const float tolerance = run_tolerance(lo, hi, bits);
  for (int64_t i = 0; i < n; ++i) {
    const float error = std::fabs(x[i * stride] - y[i * stride]);
    EXPECT_LE(error, tolerance) << "element " << i;
    worst = std::max(worst, error);
  }
  return worst;
}

TEST(KiviGroup, BytesAreCodesPlusF16ScalesAndZeros) {
  // d = 64. Keys: 64 channels x G tokens of b-bit codes, plus 64 f16 scales and 64 f16 zeros (256 B).
  // Values: G tokens x 64 channels of codes, plus G x 64/G = 64 f16 scales and as many zeros (256 B).
  struct Case {
    int64_t group;
    int bits;
    int64_t bytes;
  };
  const Case cases[] = {
      {32, 8, 2 * 64 * 32 * 8 / 8 + 256 + 256},  // 2048 + 2048 + 512 = 4608
      {32, 4, 2 * 64 * 32 * 4 / 8 + 256 + 256},  // 1024 + 1024 + 512 = 2560
      {32, 2, 2 * 64 * 32 * 2 / 8 + 256 + 256},  //  512 +  512 + 512 = 1536
      {64, 8, 2 * 64 * 64 * 8 / 8 + 256 + 256},  // 4096 + 4096 + 512 = 8704
      {64, 4, 2 * 64 * 64 * 4 / 8 + 256 + 256},  // 2048 + 2048 + 512 = 4608
      {64, 2, 2 * 64 * 64 * 2 / 8 + 256 + 256},  // 1024 + 1024 + 512 = 2560
  };
  EXPECT_EQ(kivi_group_bytes(64, 32, 4), 2560);
  // Per token: 2 * 64 * b / 8 code bytes + 512 / G metadata bytes (f16 K+V is 256).
  const int64_t per_token[] = {144, 80, 48, 136, 72, 40};
  for (size_t i = 0; i < std::size(cases); ++i) {
    const auto& c = cases[i];
    EXPECT_EQ(kivi_group_bytes(64, c.group, c.bits), c.bytes) << "G " << c.group << " bits " << c.bits;
    EXPECT_EQ(kivi_group_bytes(64, c.group, c.bits) % c.group, 0);
    EXPECT_EQ(kivi_group_bytes(64, c.group, c.bits) / c.group, per_token[i]);
  }
}

// d = 8, G = 4, 2 bits: key channel c holds c + t at token t (scale 1, zero c, code t) and value
// channel c holds c % 4 (scale 1, zero 0, code c % 4), so every byte of the documented layout is known.
TEST(KiviGroup, LayoutIsAsDocumented) {
  constexpr int64_t kDim = 8, kGroup = 4;
  std::vector<float> keys(kGroup * kDim), values(kGroup * kDim);
  for (int64_t t = 0; t < kGroup; ++t)
    for (int64_t c = 0; c < kDim; ++c) {
      keys[t * kDim + c] = static_cast<float>(c + t);
      values[t * kDim + c] = static_cast<float>(c % kGroup);
    }
  const auto r = round_trip(keys, values, kDim, kGroup, 2);
  ASSERT_EQ(r.bytes.size(), 2u * 8 + 2 * 8 + 8 * 4 * 2 / 8 + 2 * 4 * 2 + 2 * 4 * 2 + 4 * 8 * 2 / 8);  // 80
  auto half_at = [&](size_t offset) {
    uint16_t h;
    std::memcpy(&h, r.bytes.data() + offset, 2);
    return h;
  };
  auto byte_at = [&](size_t offset) { return std::to_integer<unsigned>(r.bytes[offset]); };
  const uint16_t one = kernels::cpu::fp32_to_fp16(1.0f);
  for (size_t c = 0; c < 8; ++c) {
    EXPECT_EQ(half_at(2 * c), one) << "key scale " << c;
    EXPECT_EQ(half_at(16 + 2 * c), kernels::cpu::fp32_to_fp16(static_cast<float>(c))) << "key zero " << c;
    EXPECT_EQ(byte_at(32 + c), 0xE4u) << "key codes of channel " << c;  // codes 0,1,2,3 lowest bits first
  }
  for (size_t i = 0; i < 8; ++i) {  // 4 tokens x 2 channel groups
    EXPECT_EQ(half_at(40 + 2 * i), one) << "value scale " << i;
    EXPECT_EQ(half_at(56 + 2 * i), 0u) << "value zero " << i;
  }
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(byte_at(72 + i), 0xE4u) << "value code byte " << i;
  EXPECT_EQ(r.keys, keys);
  EXPECT_EQ(r.values, values);
}

TEST(KiviGroup, RoundTripIsWithinHalfAStepOfEachRun) {
  constexpr int64_t kDim = 64;
  uint32_t seed = 10;
  for (const int64_t group : {8, 16, 32, 64})
    for (const int bits : {8, 4, 2}) {
      SCOPED_TRACE("G " + std::to_string(group) + " bits " + std::to_string(bits));
      const auto keys = testing::normal_values(group * kDim, seed++),
                 values = testing::normal_values(group * kDim, seed++, 3.0f);
      const auto r = round_trip(keys, values, kDim, group, bits);
      for (int64_t c = 0; c < kDim; ++c)  // keys: per channel over the tokens
        expect_run_within_step(keys.data() + c, r.keys.data() + c, group, kDim, bits);
      for (int64_t t = 0; t < group; ++t)  // values: per token and channel group
        for (int64_t g = 0; g < kDim / group; ++g) {
          const int64_t at = t * kDim + g * group;
          expect_run_within_step(values.data() + at, r.values.data() + at, group, 1, bits);
        }
    }
}

// 8 bits: a step is 1/255 of a run's range, a range at most twice the largest magnitude, so no element
// is off by more than 0.4% of max |x|; the RMS error, about step / sqrt(12) with N(0, 1) runs of 32
// spanning about 4, is under 0.6% of the RMS value.
TEST(KiviGroup, EightBitsIsNearlyLossless) {
  constexpr int64_t kDim = 128, kGroup = 32;
  const auto keys = testing::normal_values(kGroup * kDim, 3),
             values = testing::normal_values(kGroup * kDim, 4);
  const auto r = round_trip(keys, values, kDim, kGroup, 8);
  for (const auto* pair : {&keys, &values}) {
    const auto& x = *pair;
    const auto& y = pair == &keys ? r.keys : r.values;
    float max_abs = 0, max_error = 0;
    double square = 0, error_square = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      max_abs = std::max(max_abs, std::fabs(x[i]));
      max_error = std::max(max_error, std::fabs(x[i] - y[i]));
      square += double(x[i]) * x[i];
      error_square += double(x[i] - y[i]) * (x[i] - y[i]);
    }
    EXPECT_LT(max_error / max_abs, 0.004f) << (pair == &keys ? "keys" : "values");
    EXPECT_LT(std::sqrt(error_square / square), 0.006) << (pair == &keys ? "keys" : "values");
  }
}

// The codes are fitted against the stored f16 scale and zero: every key element inside
// [zero, zero + 255 scale] dequantizes to within half a stored step (f32 rounding aside), which fitting
// against the unrounded scale and zero would break near the midpoints between codes.
TEST(KiviGroup, CodesAreNearestForTheStoredF16ScaleAndZero) {
  constexpr int64_t kDim = 128, kGroup = 64;
  const auto keys = testing::normal_values(kGroup * kDim, 11),
             values = testing::normal_values(kGroup * kDim, 12);
  const auto r = round_trip(keys, values, kDim, kGroup, 8);
  auto stored = [&](int64_t offset) {
    uint16_t h;
    std::memcpy(&h, r.bytes.data() + offset, 2);
    return kernels::cpu::fp16_to_fp32(h);
  };
  for (int64_t c = 0; c < kDim; ++c) {
    const float scale = stored(2 * c), zero = stored(2 * kDim + 2 * c);
    for (int64_t t = 0; t < kGroup; ++t) {
      const float x = keys[t * kDim + c];
      if (x < zero || x > zero + 255 * scale) continue;
      EXPECT_LE(std::fabs(x - r.keys[t * kDim + c]), scale * (0.5f + 1e-4f))
          << "channel " << c << " token " << t;
    }
  }
}

TEST(KiviGroup, ConstantRunsAndExtremesAreExact) {
  constexpr int64_t kDim = 64, kGroup = 32;
  auto keys = testing::normal_values(kGroup * kDim, 5), values = testing::normal_values(kGroup * kDim, 6);
  constexpr float kConstant = 0.1234567f;
  for (int64_t t = 0; t < kGroup; ++t) keys[t * kDim + 5] = kConstant;  // key channel 5
  for (int64_t c = 32; c < 64; ++c) values[7 * kDim + c] = -kConstant;  // token 7, group 1
  for (const int bits : {8, 4, 2}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const auto r = round_trip(keys, values, kDim, kGroup, bits);
    for (int64_t t = 0; t < kGroup; ++t) EXPECT_EQ(r.keys[t * kDim + 5], half_rounded(kConstant)) << t;
    for (int64_t c = 32; c < 64; ++c) EXPECT_EQ(r.values[7 * kDim + c], half_rounded(-kConstant)) << c;
    for (int64_t c = 0; c < kDim; ++c) {  // each key channel's min is its f16 zero; its max the top code
      float lo = keys[c], hi = keys[c], dlo = r.keys[c], dhi = r.keys[c];
      for (int64_t t = 1; t < kGroup; ++t) {
        lo = std::min(lo, keys[t * kDim + c]), hi = std::max(hi, keys[t * kDim + c]);
        dlo = std::min(dlo, r.keys[t * kDim + c]), dhi = std::max(dhi, r.keys[t * kDim + c]);
      }
      EXPECT_EQ(dlo, half_rounded(lo)) << "channel " << c;
      EXPECT_NEAR(dhi, hi, std::ldexp(std::max(std::fabs(lo), std::fabs(hi)), -9)) << "channel " << c;
    }
  }
}

TEST(KiviGroup, FirstTokensOfAGroupDequantizeAlone) {
  constexpr int64_t kDim = 64, kGroup = 32, kCount = 11;
  const auto keys = testing::normal_values(kGroup * kDim, 7),
             values = testing::normal_values(kGroup * kDim, 8);
  const auto r = round_trip(keys, values, kDim, kGroup, 4);
  std::vector<float> k(kCount * kDim), v(kCount * kDim);
  dequantize_kivi_group(r.bytes.data(), kDim, kGroup, 4, kCount, k.data(), v.data());
  EXPECT_EQ(k, std::vector<float>(r.keys.begin(), r.keys.begin() + kCount * kDim));
  EXPECT_EQ(v, std::vector<float>(r.values.begin(), r.values.begin() + kCount * kDim));
}

// Mean |error| over the channels other than `outlier` of keys [n x d] quantized per token (one scale
// and zero over all d channels of a token, plain f32), the scheme KIVI's per-channel keys replace.
double per_token_error(const std::vector<float>& keys, int64_t d, int bits, int64_t outlier) {
  const int64_t n = static_cast<int64_t>(keys.size()) / d;
  const auto top = static_cast<float>((1 << bits) - 1);
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = keys.data() + t * d;
    const float lo = *std::min_element(x, x + d), hi = *std::max_element(x, x + d), scale = (hi - lo) / top;
    for (int64_t c = 0; c < d; ++c)
      if (c != outlier) sum += std::fabs(x[c] - (lo + std::round((x[c] - lo) / scale) * scale));
  }
  return sum / static_cast<double>(n * (d - 1));
}

TEST(KiviGroup, PerChannelKeysIsolateAnOutlierChannel) {
  constexpr int64_t kDim = 64, kGroup = 32, kOutlier = 7;
  auto keys = testing::normal_values(kGroup * kDim, 9);
  const auto values = testing::normal_values(kGroup * kDim, 10);
  for (int64_t t = 0; t < kGroup; ++t) keys[t * kDim + kOutlier] *= 100.0f;
  for (const int bits : {4, 2}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const auto r = round_trip(keys, values, kDim, kGroup, bits);
    double sum = 0;
    float worst = 0;
    for (int64_t c = 0; c < kDim; ++c)
      for (int64_t t = 0; t < kGroup; ++t)
        if (c != kOutlier) {
          const float error = std::fabs(keys[t * kDim + c] - r.keys[t * kDim + c]);
          sum += error, worst = std::max(worst, error);
        }
    const double mean = sum / static_cast<double>(kGroup * (kDim - 1));
    // N(0, 1) channels of 32 tokens span about 4.5: half a step is about 0.15 at 4 bits, 0.75 at 2.
    EXPECT_LT(worst, bits == 4 ? 0.25f : 1.1f);
    // Per token, the outlier's ~100 |x| sets every token's step: the other channels collapse onto
    // one or two codes, off by more than 1 on average (seen: 1.46 at 4 bits, 2.23 at 2; per channel
    // 0.063 and 0.32).
    const double token_mean = per_token_error(keys, kDim, bits, kOutlier);
    EXPECT_GT(token_mean, 1.0);
    EXPECT_LT(mean * 5, token_mean) << "per-channel " << mean << " per-token " << token_mean;
  }
}

void expect_invalid(int64_t d, int64_t group, int bits, const std::vector<std::string>& named) {
  try {
    kivi_group_bytes(d, group, bits);
    ADD_FAILURE() << "no exception for d " << d << " G " << group << " bits " << bits;
  } catch (const std::invalid_argument& e) {
    for (const auto& word : named) EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
  }
}

TEST(KiviGroup, BadFormatsThrowNamingTheValue) {
  expect_invalid(64, 32, 3, {"bits", "3"});
  expect_invalid(64, 32, 16, {"bits", "16"});
  expect_invalid(64, 0, 4, {"group", "0"});
  expect_invalid(64, 48, 4, {"group 48", "head_dim 64"});
  expect_invalid(0, 1, 4, {"head_dim", "0"});
  EXPECT_NO_THROW(kivi_group_bytes(64, 1, 2));
  std::vector<float> x(64 * 48);
  std::vector<std::byte> out(1 << 16);
  EXPECT_THROW(quantize_kivi_group(x.data(), x.data(), 64, 48, 4, out.data()), std::invalid_argument);
  EXPECT_THROW(dequantize_kivi_group(out.data(), 64, 32, 3, 32, x.data(), x.data()), std::invalid_argument);
  EXPECT_THROW(dequantize_kivi_group(out.data(), 64, 32, 4, 33, x.data(), x.data()), std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink
