// 16-bit KV (the default store): appended K/V are rounded to the nearest f16, a token costs
// 2 * head_dim * 2 + 4 bytes, "full KV" is counted in 16-bit bytes whatever the store holds, and
// every kernel that reads the store (dense decode and prefill with mass, observation-window
// scoring, low-rank buckets) gives on f16 blocks what it gives on f32 blocks of the rounded values.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "engine/compression/low_rank_projection.h"
#include "kernels/cpu/cpu_backend.h"
#include "kvstore/head_cache.h"
#include "kvstore/kv_store.h"
#include "support/dense_attention.h"
#include "support/half_values.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::KvDtype;
using testing::half_rounded;

// One head's tokens at positions 0..n-1 in a segment of `dtype`, from its own pool.
struct Segment {
  Segment(int64_t head_dim, KvDtype dtype, const std::vector<float>& keys, const std::vector<float>& values)
      : pool(0, kvstore::HeadSegment::block_bytes(head_dim, dtype)), segment(head_dim, dtype, true, pool) {
    const auto n = static_cast<int64_t>(keys.size()) / head_dim;
    for (int64_t t = 0; t < n; ++t)
      segment.append(keys.data() + t * head_dim, values.data() + t * head_dim, static_cast<int32_t>(t));
  }
  kvstore::KvMemoryPool pool;
  kvstore::HeadSegment segment;
};

struct AttentionResult {
  std::vector<float> out, lse, mass;
};

// m queries at the last m positions over the whole segment, group 2, with lse and summed mass.
AttentionResult attend(const kvstore::HeadSegment& segment, const std::vector<float>& q, int64_t m) {
  for (int64_t t = 0; t < segment.tokens(); ++t) segment.mass(t) = 0.0f;
  std::vector<kernels::KvBlockView> views;
  segment.block_views(views);
  auto dense = testing::cpu_dense_attention(views, q, m, static_cast<int32_t>(segment.tokens() - 1), 2,
                                            segment.head_dim());
  AttentionResult r{std::move(dense.out), std::move(dense.lse), {}};
  for (int64_t t = 0; t < segment.tokens(); ++t) r.mass.push_back(segment.mass(t));
  return r;
}

void expect_all_near(const std::vector<float>& a, const std::vector<float>& b, float tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tolerance) << i;
}

TEST(KvDtype, F16SegmentStoresNearestHalvesInHalfTheBytes) {
  constexpr int64_t kDim = 64, kTokens = 37;
  const auto keys = testing::normal_values(kTokens * kDim, 1),
             values = testing::normal_values(kTokens * kDim, 2);
  const Segment f16(kDim, KvDtype::kF16, keys, values);
  EXPECT_EQ(f16.segment.bytes_per_token(), 2u * kDim * 2 + 4);
  EXPECT_EQ(f16.segment.bytes_held(), kTokens * (2u * kDim * 2 + 4));
  EXPECT_EQ(kvstore::HeadSegment::block_bytes(kDim, KvDtype::kF16), 16u * (2 * kDim * 2 + 8));
  EXPECT_EQ(kvstore::HeadSegment::block_bytes(kDim, KvDtype::kF32), 16u * (2 * kDim * 4 + 8));
  EXPECT_EQ(f16.segment.keys(), half_rounded(keys));
  EXPECT_EQ(f16.segment.values(), half_rounded(values));

  // copies keep the halves as they are; into an f32 segment they widen exactly
  kvstore::KvMemoryPool pool(0, kvstore::HeadSegment::block_bytes(kDim, KvDtype::kF32));
  kvstore::HeadSegment widened(kDim, KvDtype::kF32, false, pool);
  for (int64_t t = 0; t < kTokens; ++t) widened.append_from(f16.segment, t);
  EXPECT_EQ(widened.keys(), half_rounded(keys));
  EXPECT_EQ(widened.positions(), f16.segment.positions());
}

TEST(KvDtype, FullKvIsCountedInSixteenBitBytesWhateverTheStoreHolds) {
  constexpr int64_t kDim = 16, kTokens = 20;
  const auto keys = testing::normal_values(kTokens * kDim, 3);
  for (const KvDtype dtype : {KvDtype::kF16, KvDtype::kF32}) {
    kvstore::KvStore kv(2, 1, kDim, 1, {}, nullptr, dtype);
    for (int64_t layer = 0; layer < 2; ++layer) {
      for (int64_t t = 0; t < kTokens; ++t)
        kv.head(layer, 0).tail().append(keys.data() + t * kDim, keys.data() + t * kDim,
                                        static_cast<int32_t>(t));
    }
    kv.advance(kTokens);
    EXPECT_EQ(kv.full_bytes(), 2u * kTokens * (2 * kDim * 2 + 4)) << kernels::kv_dtype_name(dtype);
    EXPECT_EQ(kv.bytes_held(), 2u * kTokens * (2 * kDim * kernels::kv_dtype_bytes(dtype) + 4));
    EXPECT_EQ(kv.compacted_copy({{0, 5}, {1}}).dtype(), dtype);  // copies keep the element type
  }
}

// Decode (m = 1: blocks read in place, SIMD rows at head_dim 64, plain loops at 12) and prefill
// (m = 5: blocks gathered and widened) on f16 blocks equal the same kernels on f32 blocks holding
// the rounded values.
TEST(KvDtype, AttentionOnF16BlocksEqualsAttentionOnTheRoundedValues) {
  constexpr int64_t kTokens = 45;
  for (const int64_t d : {int64_t{64}, int64_t{12}}) {
    const auto keys = testing::normal_values(kTokens * d, 4), values = testing::normal_values(kTokens * d, 5);
    const Segment f16(d, KvDtype::kF16, keys, values);
    const Segment rounded(d, KvDtype::kF32, half_rounded(keys), half_rounded(values));
    for (const int64_t m : {int64_t{1}, int64_t{5}}) {
      const auto q = testing::normal_values(static_cast<size_t>(m * 2 * d), 6);
      const auto a = attend(f16.segment, q, m), b = attend(rounded.segment, q, m);
      SCOPED_TRACE(::testing::Message() << "head_dim " << d << ", m " << m);
      expect_all_near(a.out, b.out, 1e-6f);
      expect_all_near(a.lse, b.lse, 1e-6f);
      expect_all_near(a.mass, b.mass, 1e-6f);
    }
  }
}

TEST(KvDtype, WindowScoresOnF16BlocksEqualScoresOnTheRoundedKeys) {
  constexpr int64_t kDim = 32, kTokens = 40, kWindow = 3, kGroup = 2;
  const auto keys = testing::normal_values(kTokens * kDim, 7);
  const Segment f16(kDim, KvDtype::kF16, keys, keys);
  const Segment rounded(kDim, KvDtype::kF32, half_rounded(keys), half_rounded(keys));
  const auto q = testing::normal_values(kWindow * kGroup * kDim, 8);
  const std::vector<int32_t> positions = {37, 38, 39};
  kernels::cpu::CpuBackend backend;
  std::vector<float> a(kTokens), b(kTokens);
  for (auto [segment, out] : {std::pair{&f16.segment, &a}, std::pair{&rounded.segment, &b}}) {
    std::vector<kernels::KvBlockView> views;
    segment->block_views(views);
    backend.window_attention_mean(q.data(), kGroup * kDim, positions.data(), kWindow, kGroup, kDim,
                                  1.0f / std::sqrt(static_cast<float>(kDim)), views, out->data());
  }
  expect_all_near(a, b, 1e-6f);
}

// A rank-r bucket of f16 coefficients attends as the same bucket of f32 coefficients rounded to f16.
TEST(KvDtype, LowRankBucketsOfHalvesEqualBucketsOfTheRoundedCoefficients) {
  constexpr int64_t kDim = 16, kTokens = 30, kRank = 6, kGroup = 2;
  const auto key_coefficients = testing::normal_values(kTokens * kRank, 9),
             value_coefficients = testing::normal_values(kTokens * kRank, 10);
  const auto key_basis = testing::normal_values(kDim * kDim, 11),
             value_basis = testing::normal_values(kDim * kDim, 12);
  std::vector<int32_t> positions(kTokens);
  std::iota(positions.begin(), positions.end(), 0);
  kvstore::KvMemoryPool pool(0, kvstore::HeadSegment::block_bytes(kDim, KvDtype::kF16));
  const kvstore::LowRankBlock halves(kRank, 1, KvDtype::kF16, key_coefficients.data(),
                                     value_coefficients.data(), positions.data(), kTokens, pool);
  EXPECT_EQ(halves.bytes(), kTokens * (2u * kRank * 2 + 4));
  const auto rounded_keys = half_rounded(key_coefficients), rounded_values = half_rounded(value_coefficients);
  const std::vector<kernels::LowRankBucket> exact = {
      {rounded_keys.data(), rounded_values.data(), positions.data(), kTokens, kRank, KvDtype::kF32}};
  std::vector<kernels::LowRankBucket> stored;
  halves.buckets(stored);
  for (const bool pre_rope : {false, true}) {
    for (const int64_t m : {int64_t{1}, int64_t{4}}) {
      const auto q = testing::normal_values(static_cast<size_t>(m * kGroup * kDim), 13);
      std::vector<int32_t> q_positions(static_cast<size_t>(m));
      std::iota(q_positions.begin(), q_positions.end(), static_cast<int32_t>(kTokens - m));
      std::vector<float> outs[2], lses[2];
      for (int run = 0; run < 2; ++run) {
        const auto& buckets = run == 0 ? stored : exact;
        outs[run].assign(static_cast<size_t>(m * kGroup * kDim), 0.0f);
        lses[run].assign(static_cast<size_t>(m * kGroup), 0.0f);
        kernels::LowRankAttention a{};
        a.q = q.data();
        a.q_stride = kGroup * kDim;
        a.out = outs[run].data();
        a.out_stride = kGroup * kDim;
        a.lse = lses[run].data();
        a.buckets = buckets.data();
        a.n_buckets = static_cast<int64_t>(buckets.size());
        a.q_positions = q_positions.data();
        a.key_basis = key_basis.data();
        a.value_basis = value_basis.data();
        a.m = m;
        a.group = kGroup;
        a.head_dim = kDim;
        a.pre_rope_keys = pre_rope;
        a.rope_base = 10000.0f;
        a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
        kernels::cpu::CpuBackend backend;
        backend.low_rank_attention(std::span<const kernels::LowRankAttention>(&a, 1));
      }
      SCOPED_TRACE(::testing::Message() << "pre_rope " << pre_rope << ", m " << m);
      expect_all_near(outs[0], outs[1], 1e-6f);
      expect_all_near(lses[0], lses[1], 1e-6f);
    }
  }
}

TEST(KvDtype, NamesAndUnknownDtypes) {
  EXPECT_EQ(kernels::kv_dtype_from_name("f16"), KvDtype::kF16);
  EXPECT_EQ(kernels::kv_dtype_from_name("f32"), KvDtype::kF32);
  EXPECT_EQ(kernels::kv_dtype_name(KvDtype::kF16), "f16");
  try {
    kernels::kv_dtype_from_name("bf8");
    ADD_FAILURE() << "bf8 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown KV dtype 'bf8' (this build has: f16, f32)");
  }
  try {
    kernels::kv_dtype_from_name("q4");
    ADD_FAILURE() << "q4 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "KV dtype 'q4': quantized KV segments are not built yet (this build has: f16, f32)");
  }
}

}  // namespace
}  // namespace kvshrink
