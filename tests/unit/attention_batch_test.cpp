// Backend::attention and Backend::low_rank_attention over a batch of calls: the CPU backend runs
// every call on its compute threads, each in its thread's scratch (prefill calls cut into blocks of
// kPrefillQueryBlock queries, OpenBLAS single-threaded meanwhile); every call must give exactly
// what the kernel gives for it alone. And the decode kernel against a float64
// reference, at head sizes in and out of the SIMD width.
#include <cblas.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/head_attention.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

constexpr int64_t kGroup = 3, kDim = 64, kBlockTokens = 16;

// One (sequence, kv head): tokens at positions 0..n-1 in blocks of kBlockTokens, m queries at the
// last m positions, and its outputs.
struct Head {
  std::vector<float> keys, values, mass, q, out, lse;
  std::vector<int32_t> positions, q_positions;
  std::vector<kernels::KvBlockView> blocks;
  int64_t m;
};

Head make_head(int64_t n, int64_t m, uint32_t seed) {
  Head h;
  h.keys = testing::normal_values(static_cast<size_t>(n * kDim), seed);
  h.values = testing::normal_values(h.keys.size(), seed + 1);
  h.q = testing::normal_values(static_cast<size_t>(m * kGroup * kDim), seed + 2);
  h.mass.assign(static_cast<size_t>(n), 0.0f);
  h.out.assign(h.q.size(), 0.0f);
  h.lse.assign(static_cast<size_t>(m * kGroup), 0.0f);
  for (int64_t t = 0; t < n; ++t) h.positions.push_back(static_cast<int32_t>(t));
  for (int64_t i = 0; i < m; ++i) h.q_positions.push_back(static_cast<int32_t>(n - m + i));
  for (int64_t t = 0; t < n; t += kBlockTokens) {
    h.blocks.push_back({h.keys.data() + t * kDim, h.values.data() + t * kDim, h.positions.data() + t,
                        h.mass.data() + t, std::min(kBlockTokens, n - t)});
  }
  h.m = m;
  return h;
}

kernels::HeadAttention call_of(Head& h, bool track_mass) {
  kernels::HeadAttention a{};
  a.q = h.q.data();
  a.q_stride = kGroup * kDim;
  a.out = h.out.data();
  a.out_stride = kGroup * kDim;
  a.blocks = h.blocks.data();
  a.n_blocks = static_cast<int64_t>(h.blocks.size());
  a.q_positions = h.q_positions.data();
  a.m = h.m;
  a.group = kGroup;
  a.head_dim = kDim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  a.lse = h.lse.data();
  a.track_mass = track_mass;
  return a;
}

// Decode heads of many lengths (some tracking mass, i % 3 == 0 below) and prefill heads, two of
// them longer than one query block (300 queries: split in 3; 260 tracking mass: kept whole).
std::vector<Head> make_heads() {
  std::vector<Head> heads;
  const int64_t lengths[] = {1, 17, 300, 64, 129, 5, 1000, 33, 250, 16, 80, 2};
  for (int i = 0; i < 12; ++i) heads.push_back(make_head(lengths[i], 1, 100 + 7 * i));
  heads.push_back(make_head(200, 40, 7));
  heads.push_back(make_head(90, 3, 8));
  heads.push_back(make_head(400, 300, 9));
  heads.push_back(make_head(260, 260, 10));
  return heads;
}

class AttentionBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    threads_ = openblas_get_num_threads();
    openblas_set_num_threads(2);  // one compute-thread worker beside the caller, on any machine
  }
  void TearDown() override { openblas_set_num_threads(threads_); }
  int threads_ = 1;
  kernels::cpu::CpuBackend backend_;
};

TEST_F(AttentionBatchTest, EveryCallEqualsItselfAlone) {
  auto alone = make_heads(), batched = make_heads();
  std::vector<kernels::HeadAttention> calls;
  static_assert(kernels::cpu::kPrefillQueryBlock < 300);
  for (size_t i = 0; i < alone.size(); ++i) {
    backend_.attention(call_of(alone[i], i % 3 == 0));
    calls.push_back(call_of(batched[i], i % 3 == 0));
  }
  ASSERT_FALSE(calls[14].track_mass);
  ASSERT_TRUE(calls[15].track_mass);
  backend_.attention(calls);
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(batched[i].out, alone[i].out) << "call " << i;
    EXPECT_EQ(batched[i].lse, alone[i].lse) << "call " << i;
    EXPECT_EQ(batched[i].mass, alone[i].mass) << "call " << i;
  }
}

// A call without out (the second pass of a head split over segments) adds the same mass.
TEST_F(AttentionBatchTest, MassOnlyCallsAddTheSameMass) {
  auto with_out = make_heads(), mass_only = make_heads();
  std::vector<kernels::HeadAttention> calls;
  for (size_t i = 0; i < with_out.size(); ++i) {
    auto a = call_of(with_out[i], true);
    a.lse = nullptr;
    backend_.attention(a);
    a = call_of(mass_only[i], true);
    a.out = nullptr;
    a.lse = nullptr;
    calls.push_back(a);
  }
  backend_.attention(calls);
  for (size_t i = 0; i < with_out.size(); ++i) EXPECT_EQ(mass_only[i].mass, with_out[i].mass) << "call " << i;
}

// One head's tokens at rank r in a (random, not orthonormal) basis.
struct LowRankHead {
  std::vector<float> key_coefficients, value_coefficients, key_basis, value_basis, q, out, lse;
  std::vector<int32_t> positions, q_positions;
  kernels::LowRankBucket bucket;
  kernels::LowRankAttention call;
};

void make_low_rank_head(LowRankHead& h, int64_t n, int64_t r, int64_t m, bool pre_rope, uint32_t seed) {
  h.key_coefficients = testing::normal_values(static_cast<size_t>(n * r), seed);
  h.value_coefficients = testing::normal_values(h.key_coefficients.size(), seed + 1);
  h.key_basis = testing::normal_values(static_cast<size_t>(r * kDim), seed + 2, 0.125f);
  h.value_basis = testing::normal_values(h.key_basis.size(), seed + 3, 0.125f);
  h.q = testing::normal_values(static_cast<size_t>(m * kGroup * kDim), seed + 4);
  h.out.assign(h.q.size(), 0.0f);
  h.lse.assign(static_cast<size_t>(m * kGroup), 0.0f);
  for (int64_t t = 0; t < n; ++t) h.positions.push_back(static_cast<int32_t>(t));
  for (int64_t i = 0; i < m; ++i) h.q_positions.push_back(static_cast<int32_t>(n - m + i));
  h.bucket = {h.key_coefficients.data(), h.value_coefficients.data(), h.positions.data(), n, r};
  auto& a = h.call;
  a = {};
  a.q = h.q.data();
  a.q_stride = kGroup * kDim;
  a.out = h.out.data();
  a.out_stride = kGroup * kDim;
  a.lse = h.lse.data();
  a.buckets = &h.bucket;
  a.n_buckets = 1;
  a.q_positions = h.q_positions.data();
  a.key_basis = h.key_basis.data();
  a.value_basis = h.value_basis.data();
  a.m = m;
  a.group = kGroup;
  a.head_dim = kDim;
  a.pre_rope_keys = pre_rope;
  a.rope_base = 10000.0f;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
}

TEST_F(AttentionBatchTest, EveryLowRankCallEqualsItselfAlone) {
  struct Shape {
    int64_t n, r, m;
    bool pre_rope;
  };
  const Shape shapes[] = {{40, 16, 1, false}, {300, 8, 1, false}, {7, 32, 1, false},  {100, 16, 1, false},
                          {50, 16, 1, true},  {60, 8, 4, false},  {129, 64, 1, false}};
  std::vector<LowRankHead> alone(std::size(shapes)), batched(std::size(shapes));
  std::vector<kernels::LowRankAttention> calls;
  for (size_t i = 0; i < std::size(shapes); ++i) {
    const auto& s = shapes[i];
    make_low_rank_head(alone[i], s.n, s.r, s.m, s.pre_rope, 300 + 11 * static_cast<uint32_t>(i));
    make_low_rank_head(batched[i], s.n, s.r, s.m, s.pre_rope, 300 + 11 * static_cast<uint32_t>(i));
    backend_.low_rank_attention(alone[i].call);
    calls.push_back(batched[i].call);
  }
  backend_.low_rank_attention(calls);
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(batched[i].out, alone[i].out) << "call " << i;
    EXPECT_EQ(batched[i].lse, alone[i].lse) << "call " << i;
  }
}

// Decode of one query token over blocks of 16 tokens against softmax(q . k / sqrt(d)) . V in double.
TEST_F(AttentionBatchTest, DecodeMatchesAFloat64Reference) {
  for (const int64_t d : {40, 64, 128}) {
    constexpr int64_t kTokens = 70, kVisible = 61;  // the last block is cut by the query position
    const auto keys = testing::normal_values(static_cast<size_t>(kTokens * d), 1);
    const auto values = testing::normal_values(keys.size(), 2);
    const auto q = testing::normal_values(static_cast<size_t>(kGroup * d), 3);
    std::vector<int32_t> positions(kTokens);
    for (int64_t t = 0; t < kTokens; ++t) positions[t] = static_cast<int32_t>(t);
    std::vector<kernels::KvBlockView> blocks;
    for (int64_t t = 0; t < kTokens; t += kBlockTokens) {
      blocks.push_back({keys.data() + t * d, values.data() + t * d, positions.data() + t, nullptr,
                        std::min(kBlockTokens, kTokens - t)});
    }
    const int32_t q_position = kVisible - 1;
    std::vector<float> out(static_cast<size_t>(kGroup * d)), lse(kGroup);
    kernels::HeadAttention a{};
    a.q = q.data();
    a.q_stride = kGroup * d;
    a.out = out.data();
    a.out_stride = kGroup * d;
    a.blocks = blocks.data();
    a.n_blocks = static_cast<int64_t>(blocks.size());
    a.q_positions = &q_position;
    a.m = 1;
    a.group = kGroup;
    a.head_dim = d;
    a.scale = 1.0f / std::sqrt(static_cast<float>(d));
    a.lse = lse.data();
    backend_.attention(a);
    for (int64_t j = 0; j < kGroup; ++j) {
      std::vector<double> s(kVisible);
      double top = -1e300, sum = 0.0;
      for (int64_t t = 0; t < kVisible; ++t) {
        for (int64_t k = 0; k < d; ++k) s[t] += double{q[j * d + k]} * keys[t * d + k];
        s[t] /= std::sqrt(static_cast<double>(d));
        top = std::max(top, s[t]);
      }
      for (auto& x : s) sum += (x = std::exp(x - top));
      EXPECT_NEAR(lse[j], top + std::log(sum), 1e-5) << "d " << d << " head " << j;
      for (int64_t k = 0; k < d; ++k) {
        double expected = 0.0;
        for (int64_t t = 0; t < kVisible; ++t) expected += s[t] / sum * values[t * d + k];
        EXPECT_NEAR(out[j * d + k], expected, 1e-5) << "d " << d << " head " << j << " dim " << k;
      }
    }
  }
}

}  // namespace
}  // namespace kvshrink
