// Attention over KIVI-quantized KV blocks (kernels/cpu/kivi_group.h, issue 13 point 2): on the CPU
// backend, dense decode and prefill (with lse and attention mass) and observation-window scoring
// over quantized groups give what they give over f32 blocks holding the groups' dequantized K/V,
// and a quantized part merged with a 16-bit tail by the online-softmax rule equals one pass over
// both; the error of the output against the unquantized K/V falls with the bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kivi_group.h"
#include "support/dense_attention.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

constexpr int64_t kDim = 64, kGroup = 16, kHeads = 2;  // kHeads: query heads of the kv head

// n tokens (a multiple of kGroup) quantized group by group, and the same tokens dequantized.
struct QuantizedTokens {
  QuantizedTokens(int64_t n, int bits) : n(n), bits(bits) {
    keys = testing::normal_values(static_cast<size_t>(n * kDim), 21);
    values = testing::normal_values(static_cast<size_t>(n * kDim), 22);
    for (int64_t c = 0; c < kDim; c += 7) {  // outlier key channels, as real keys have
      for (int64_t t = 0; t < n; ++t) keys[static_cast<size_t>(t * kDim + c)] *= 8.0f;
    }
    const int64_t group_bytes = kernels::cpu::kivi_group_bytes(kDim, kGroup, bits);
    groups.resize(static_cast<size_t>(n / kGroup * group_bytes));
    dequantized_keys.resize(keys.size());
    dequantized_values.resize(values.size());
    for (int64_t g = 0; g < n / kGroup; ++g) {
      std::byte* data = groups.data() + g * group_bytes;
      kernels::cpu::quantize_kivi_group(keys.data() + g * kGroup * kDim, values.data() + g * kGroup * kDim,
                                        kDim, kGroup, bits, data);
      kernels::cpu::dequantize_kivi_group(data, kDim, kGroup, bits, kGroup,
                                          dequantized_keys.data() + g * kGroup * kDim,
                                          dequantized_values.data() + g * kGroup * kDim);
    }
    positions.resize(static_cast<size_t>(n));
    std::iota(positions.begin(), positions.end(), 0);
  }
  // One view per group over tokens [first, first + count) (first a multiple of kGroup).
  std::vector<kernels::KvBlockView> quantized_views(int64_t first, int64_t count, float* mass) const {
    const int64_t group_bytes = kernels::cpu::kivi_group_bytes(kDim, kGroup, bits);
    std::vector<kernels::KvBlockView> views;
    for (int64_t t = first; t < first + count; t += kGroup) {
      views.push_back({groups.data() + t / kGroup * group_bytes, nullptr, positions.data() + t,
                       mass ? mass + (t - first) : nullptr, std::min(kGroup, first + count - t),
                       kernels::KvDtype::kF32, bits, static_cast<int32_t>(kGroup)});
    }
    return views;
  }
  int64_t n;
  int bits;
  std::vector<float> keys, values, dequantized_keys, dequantized_values;
  std::vector<std::byte> groups;
  std::vector<int32_t> positions;
};

// f32 views of k, v [tokens x kDim] at positions 0, 1, ... over tokens [first, first + count), in
// blocks of 5 (any split must agree).
std::vector<kernels::KvBlockView> f32_views(const std::vector<float>& k, const std::vector<float>& v,
                                            const std::vector<int32_t>& positions, int64_t first,
                                            int64_t count, float* mass) {
  std::vector<kernels::KvBlockView> views;
  for (int64_t t = first; t < first + count; t += 5) {
    views.push_back({k.data() + t * kDim, v.data() + t * kDim, positions.data() + t,
                     mass ? mass + (t - first) : nullptr, std::min<int64_t>(5, first + count - t)});
  }
  return views;
}

// m queries at positions last - m + 1 .. last over `views`, lse always, mass when the views carry it.
testing::DenseAttention attend(const std::vector<kernels::KvBlockView>& views, const std::vector<float>& q,
                               int64_t m, int32_t last) {
  return testing::cpu_dense_attention(views, q, m, last, kHeads, kDim);
}

void expect_near(const std::vector<float>& a, const std::vector<float>& b, float tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tolerance) << i;
}

TEST(KiviAttention, QuantizedBlocksAttendAsTheirDequantizedKeysAndValues) {
  for (const int bits : {8, 4, 2}) {
    const QuantizedTokens t(80, bits);
    for (const int64_t m : {int64_t{1}, int64_t{6}}) {
      SCOPED_TRACE(::testing::Message() << bits << " bits, m " << m);
      const auto q = testing::normal_values(static_cast<size_t>(m * kHeads * kDim), 23);
      std::vector<float> mass(80, 0.0f), reference_mass(80, 0.0f);
      const auto quantized = attend(t.quantized_views(0, 80, mass.data()), q, m, 77);  // the last 2 unseen
      const auto reference = attend(
          f32_views(t.dequantized_keys, t.dequantized_values, t.positions, 0, 80, reference_mass.data()), q,
          m, 77);
      expect_near(quantized.out, reference.out, 1e-5f);
      expect_near(quantized.lse, reference.lse, 1e-5f);
      expect_near(mass, reference_mass, 1e-6f);
      EXPECT_EQ(mass[79], 0.0f);  // causal: no query sees position 79
    }
  }
}

// The quantized groups [0, 64) and a 16-bit tail [64, 75) as two parts, merged, equal one pass over
// the dequantized groups followed by the tail.
TEST(KiviAttention, QuantizedPartMergesWithATail) {
  const QuantizedTokens t(64, 4);
  const auto tail_keys = testing::normal_values(11 * kDim, 24),
             tail_values = testing::normal_values(11 * kDim, 25);
  std::vector<float> keys = t.dequantized_keys, values = t.dequantized_values;
  keys.insert(keys.end(), tail_keys.begin(), tail_keys.end());
  values.insert(values.end(), tail_values.begin(), tail_values.end());
  std::vector<int32_t> positions(75);
  std::iota(positions.begin(), positions.end(), 0);
  const int64_t m = 3;
  const auto q = testing::normal_values(static_cast<size_t>(m * kHeads * kDim), 26);
  auto merged = attend(t.quantized_views(0, 64, nullptr), q, m, 74);
  const auto tail = attend(f32_views(keys, values, positions, 64, 11, nullptr), q, m, 74);
  kernels::cpu::CpuBackend backend;
  backend.merge_attention(merged.out.data(), kHeads * kDim, merged.lse.data(), tail.out.data(), kHeads * kDim,
                          tail.lse.data(), m, kHeads, kDim);
  const auto one_pass = attend(f32_views(keys, values, positions, 0, 75, nullptr), q, m, 74);
  expect_near(merged.out, one_pass.out, 1e-5f);
  expect_near(merged.lse, one_pass.lse, 1e-5f);
}

TEST(KiviAttention, WindowScoresOverQuantizedBlocksEqualScoresOverTheDequantizedKeys) {
  const QuantizedTokens t(48, 2);
  constexpr int64_t kWindow = 3;
  const auto q = testing::normal_values(kWindow * kHeads * kDim, 27);
  const std::vector<int32_t> q_positions = {45, 46, 47};
  kernels::cpu::CpuBackend backend;
  std::vector<float> quantized(48), reference(48);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  backend.window_attention_mean(q.data(), kHeads * kDim, q_positions.data(), kWindow, kHeads, kDim, scale,
                                t.quantized_views(0, 48, nullptr), quantized.data());
  backend.window_attention_mean(
      q.data(), kHeads * kDim, q_positions.data(), kWindow, kHeads, kDim, scale,
      f32_views(t.dequantized_keys, t.dequantized_values, t.positions, 0, 48, nullptr), reference.data());
  expect_near(quantized, reference, 1e-6f);
}

// Against the unquantized K/V: the attention output's error shrinks as the bits grow.
TEST(KiviAttention, OutputErrorFallsWithTheBits) {
  const auto q = testing::normal_values(kHeads * kDim, 28);
  double previous = 1e9;
  for (const int bits : {2, 4, 8}) {
    const QuantizedTokens t(96, bits);
    const auto quantized = attend(t.quantized_views(0, 96, nullptr), q, 1, 95);
    const auto exact = attend(f32_views(t.keys, t.values, t.positions, 0, 96, nullptr), q, 1, 95);
    double error = 0.0, norm = 0.0;
    for (size_t i = 0; i < exact.out.size(); ++i) {
      error += std::pow(quantized.out[i] - exact.out[i], 2);
      norm += std::pow(exact.out[i], 2);
    }
    const double relative = std::sqrt(error / norm);
    std::printf("%d bits: relative error of the attention output %.4f\n", bits, relative);
    EXPECT_LT(relative, previous);
    previous = relative;
  }
  EXPECT_LT(previous, 0.02);  // 8 bits
}

}  // namespace
}  // namespace kvshrink
