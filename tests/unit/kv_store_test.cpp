// The compressed store: tokens live in pool blocks; compaction keeps exactly the planned tokens
// with their positions, in place, and gives the freed blocks back at once; the pool enforces its
// capacity; attention over blocks equals attention over the same tokens in one run; attention over several
// segments merged with the online-softmax rule equals attention over one segment holding the same tokens, and
// so do the accumulated attention masses (H2O) normalised over the whole head.
#include "kvstore/kv_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "support/half_values.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

constexpr int64_t kDim = 8;

void fill(kvstore::HeadSegment& segment, const std::vector<float>& keys, const std::vector<float>& values,
          int64_t first, int64_t count) {
  for (int64_t t = first; t < first + count; ++t) {
    segment.append(keys.data() + t * kDim, values.data() + t * kDim, static_cast<int32_t>(t));
  }
}

uint64_t block_bytes() {
  return kvstore::HeadSegment::block_bytes(kDim, kernels::KvDtype::kF16);
}
int64_t blocks(int64_t tokens) {
  return (tokens + 15) / 16;
}

TEST(KvStore, CompactionKeepsPlannedTokensAndFreesTheRest) {
  auto pool = std::make_shared<kvstore::KvMemoryPool>(0, block_bytes());
  kvstore::KvStore kv(2, 1, kDim, 3, {}, pool);
  const auto keys = testing::normal_values(40 * kDim, 1), values = testing::normal_values(40 * kDim, 2);
  for (int64_t layer = 0; layer < 2; ++layer) fill(kv.head(layer, 0).tail(), keys, values, 0, 40);
  kv.advance(40);
  const uint64_t full = kv.bytes_held();
  EXPECT_EQ(full, kv.full_bytes());
  EXPECT_EQ(pool->blocks_in_use(), 2 * blocks(40));
  EXPECT_EQ(kv.block_bytes_held(), pool->in_use());

  kv.compact({{0, 3, 9, 33}, {1, 2}});
  EXPECT_EQ(kv.head(0, 0).positions(), (std::vector<int32_t>{0, 3, 9, 33}));
  EXPECT_EQ(kv.head(1, 0).positions(), (std::vector<int32_t>{1, 2}));
  const auto& kept = kv.head(0, 0).segments()[0];
  std::vector<float> key(kDim), value(kDim);
  kept.read_key(3, key.data());
  kept.read_value(1, value.data());
  for (int64_t i = 0; i < kDim; ++i)
    EXPECT_EQ(key[i], testing::half_rounded(keys[33 * kDim + i]));  // f16 by default
  for (int64_t i = 0; i < kDim; ++i) EXPECT_EQ(value[i], testing::half_rounded(values[3 * kDim + i]));
  EXPECT_EQ(kv.bytes_held(), full * 6 / 80);
  EXPECT_EQ(pool->blocks_in_use(), 2);  // one block per head, returned at once
  EXPECT_EQ(pool->peak(), 2 * blocks(40) * block_bytes());
  EXPECT_EQ(kv.full_bytes(), full);  // the denominator stays: all positions so far

  // new tokens go to the tail and keep ascending positions; compacting [kept, tail] merges them
  for (int32_t p = 40; p < 60; ++p) kv.head(0, 0).tail().append(keys.data(), values.data(), p);
  kv.compact({{0, 1, 2, 3, 4, 23}, {0, 1}});
  EXPECT_EQ(kv.head(0, 0).positions(), (std::vector<int32_t>{0, 3, 9, 33, 40, 59}));
  EXPECT_EQ(kv.head(0, 0).segments().size(), 2u);
  EXPECT_EQ(pool->blocks_in_use(), 2);
  EXPECT_THROW(kv.compact({{2, 1}, {0}}), std::invalid_argument);  // not ascending
  EXPECT_THROW(kv.compact({{0}}), std::invalid_argument);          // wrong head count
}

TEST(KvStore, CompactedCopyLeavesTheOriginal) {
  auto pool = std::make_shared<kvstore::KvMemoryPool>(0, block_bytes());
  kvstore::KvStore kv(1, 1, kDim, 3, {.query_window = 2}, pool);
  const auto keys = testing::normal_values(20 * kDim, 3);
  fill(kv.head(0, 0).tail(), keys, keys, 0, 20);
  kv.advance(20);
  auto copy = kv.compacted_copy({{4, 5}});
  EXPECT_EQ(kv.head(0, 0).tokens(), 20);
  EXPECT_EQ(copy.head(0, 0).tokens(), 2);
  EXPECT_EQ(copy.next_position(), 20);
  EXPECT_EQ(pool->in_use(), kv.block_bytes_held() + copy.block_bytes_held());
  EXPECT_EQ(pool->blocks_in_use(), 3);
}

TEST(KvMemoryPool, CapacityIsEnforcedAndBlocksReturn) {
  kvstore::KvMemoryPool pool(3 * block_bytes() + 10, block_bytes());
  EXPECT_EQ(pool.capacity_blocks(), 3);
  std::vector<kvstore::KvBlock> held;
  for (int i = 0; i < 3; ++i) held.push_back(pool.allocate());
  EXPECT_FALSE(pool.can_allocate(1));
  EXPECT_THROW(pool.allocate(), kvstore::KvMemoryExhausted);
  held.pop_back();
  EXPECT_EQ(pool.free_blocks(), 1);
  EXPECT_NO_THROW(held.push_back(pool.allocate()));
  EXPECT_EQ(pool.peak(), 3 * block_bytes());
  EXPECT_THROW(kvstore::KvMemoryPool(0, 100), std::invalid_argument);  // not a multiple of 64
}

// clear() forgets what a store kept beside its tokens: the token ids and the query statistics.
TEST(KvStore, ClearForgetsTokenIdsAndQueryStatistics) {
  kvstore::KvStore kv(1, 1, kDim, 1, {.query_statistics_from = 0, .keep_token_ids = true});
  const std::vector<int32_t> ids = {7, 8, 9};
  const auto query = testing::normal_values(kDim, 3);
  kv.record_token_ids(ids);
  kv.query_statistics(0).add(query.data(), 0);
  kv.advance(3);
  ASSERT_EQ(kv.token_ids(), ids);
  kv.clear();
  EXPECT_TRUE(kv.token_ids().empty());
  EXPECT_EQ(kv.query_statistics(0).count(), 0);
  EXPECT_TRUE(kv.query_statistics(0).tracked());
  EXPECT_EQ(kv.next_position(), 0);
}

TEST(KvStore, AppendPastThePoolThrows) {
  auto pool = std::make_shared<kvstore::KvMemoryPool>(2 * block_bytes(), block_bytes());
  kvstore::KvStore kv(1, 1, kDim, 1, {}, pool);
  const auto keys = testing::normal_values(40 * kDim, 7);
  fill(kv.head(0, 0).tail(), keys, keys, 0, 32);
  EXPECT_THROW(fill(kv.head(0, 0).tail(), keys, keys, 32, 1), kvstore::KvMemoryExhausted);
}

// Attention of m queries (group 3) over 12 tokens in one segment vs split 5 + 7 and merged, and
// over blocks of 1..5 tokens in one call (decode and prefill paths).
TEST(SegmentedAttention, MergedSegmentsEqualOneSegment) {
  constexpr int64_t kGroup = 3, kTokens = 12, kQueries = 4;
  const auto keys = testing::normal_values(kTokens * kDim, 4),
             values = testing::normal_values(kTokens * kDim, 5);
  auto q = testing::normal_values(kQueries * kGroup * kDim, 6);
  std::vector<int32_t> q_positions = {3, 7, 11, 11};
  std::vector<int32_t> positions(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) positions[t] = static_cast<int32_t>(t);
  kernels::cpu::CpuBackend backend;

  // blocks of `block` tokens over [first, first + n); their masses point into mass (may be null)
  auto run_blocks = [&](int64_t first, int64_t n, int64_t block, int64_t m, float* out, float* lse,
                        float* mass, const float* lse_ref) {
    std::vector<kernels::KvBlockView> views;
    for (int64_t t = first; t < first + n; t += block) {
      const int64_t count = std::min(block, first + n - t);
      views.push_back({keys.data() + t * kDim, values.data() + t * kDim, positions.data() + t,
                       mass ? mass + (t - first) : nullptr, count});
    }
    kernels::HeadAttention a{};
    a.q = q.data();
    a.q_stride = kGroup * kDim;
    a.out = out;
    a.out_stride = kGroup * kDim;
    a.blocks = views.data();
    a.n_blocks = static_cast<int64_t>(views.size());
    a.q_positions = q_positions.data();
    a.m = m;
    a.group = kGroup;
    a.head_dim = kDim;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
    a.lse = lse;
    a.track_mass = mass != nullptr;
    a.lse_reference = lse_ref;
    backend.attention(a);
  };
  auto run = [&](int64_t first, int64_t n, float* out, float* lse, float* mass, const float* lse_ref) {
    run_blocks(first, n, n, kQueries, out, lse, mass, lse_ref);
  };
  const size_t out_size = kQueries * kGroup * kDim, lse_size = kQueries * kGroup;
  std::vector<float> whole(out_size), whole_mass(kTokens, 0.0f);
  run(0, kTokens, whole.data(), nullptr, whole_mass.data(), nullptr);

  std::vector<float> merged(out_size), lse(lse_size), part(out_size), part_lse(lse_size);
  run(0, 5, merged.data(), lse.data(), nullptr, nullptr);
  run(5, 7, part.data(), part_lse.data(), nullptr, nullptr);
  backend.merge_attention(merged.data(), kGroup * kDim, lse.data(), part.data(), kGroup * kDim,
                          part_lse.data(), kQueries, kGroup, kDim);
  for (size_t i = 0; i < out_size; ++i) EXPECT_NEAR(merged[i], whole[i], 1e-5f) << i;

  std::vector<float> mass(kTokens, 0.0f), scratch(out_size);
  run(0, 5, scratch.data(), nullptr, mass.data(), lse.data());
  run(5, 7, scratch.data(), nullptr, mass.data() + 5, lse.data());
  for (int64_t t = 0; t < kTokens; ++t) EXPECT_NEAR(mass[t], whole_mass[t], 1e-5f) << t;
  // every query gives probability 1 in all: the masses sum to the number of queries
  float total = 0.0f;
  for (float x : whole_mass) total += x;
  EXPECT_NEAR(total, static_cast<float>(kQueries), 1e-4f);

  for (int64_t block = 1; block <= 5; ++block) {
    std::vector<float> paged(out_size), paged_mass(kTokens, 0.0f);
    run_blocks(0, kTokens, block, kQueries, paged.data(), nullptr, paged_mass.data(), nullptr);
    for (size_t i = 0; i < out_size; ++i) EXPECT_NEAR(paged[i], whole[i], 1e-5f) << "block " << block;
    for (int64_t t = 0; t < kTokens; ++t)
      EXPECT_NEAR(paged_mass[t], whole_mass[t], 1e-5f) << "block " << block;
  }
  // decode: the last query alone (position 11), one run vs blocks of 5
  std::vector<float> one(kGroup * kDim), blocked(kGroup * kDim), one_lse(kGroup), blocked_lse(kGroup);
  const auto last_q = static_cast<ptrdiff_t>(3 * kGroup * kDim);
  std::vector<float> q_last(q.begin() + last_q, q.end());
  q.swap(q_last);
  q_positions = {11};
  run_blocks(0, kTokens, kTokens, 1, one.data(), one_lse.data(), nullptr, nullptr);
  run_blocks(0, kTokens, 5, 1, blocked.data(), blocked_lse.data(), nullptr, nullptr);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(blocked[i], one[i], 1e-5f);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], whole[last_q + i], 1e-5f);
  for (int64_t j = 0; j < kGroup; ++j) EXPECT_NEAR(blocked_lse[j], one_lse[j], 1e-5f);
}

// mass_max (KVzip's probe): each token's mass becomes the largest probability any query and any
// head of the group gives it, against a softmax by hand in double; decode (m = 1) and prefill paths,
// blocks of 5, and a mass that starts above some probabilities keeps its value there.
TEST(SegmentedAttention, MassMaxKeepsTheLargestProbability) {
  constexpr int64_t kGroup = 3, kTokens = 12, kQueries = 4;
  const auto keys = testing::normal_values(kTokens * kDim, 7),
             values = testing::normal_values(kTokens * kDim, 8);
  const auto q = testing::normal_values(kQueries * kGroup * kDim, 9);
  const std::vector<int32_t> q_positions = {3, 7, 11, 11};
  std::vector<int32_t> positions(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) positions[t] = static_cast<int32_t>(t);
  kernels::cpu::CpuBackend backend;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  for (const int64_t m : {int64_t{1}, kQueries}) {
    std::vector<double> expected(kTokens, 0.05);  // the starting mass
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < kGroup; ++j) {
        std::vector<double> logit(kTokens, -1e300);
        double top = -1e300, sum = 0.0;
        for (int64_t t = 0; t <= q_positions[i]; ++t) {
          double dot = 0.0;
          for (int64_t k = 0; k < kDim; ++k)
            dot += double(q[(i * kGroup + j) * kDim + k]) * keys[t * kDim + k];
          top = std::max(top, logit[t] = dot * scale);
        }
        for (int64_t t = 0; t <= q_positions[i]; ++t) sum += std::exp(logit[t] - top);
        for (int64_t t = 0; t <= q_positions[i]; ++t)
          expected[t] = std::max(expected[t], std::exp(logit[t] - top) / sum);
      }
    }
    std::vector<float> mass(kTokens, 0.05f), out(static_cast<size_t>(m * kGroup * kDim));
    std::vector<kernels::KvBlockView> views;
    for (int64_t t = 0; t < kTokens; t += 5) {
      views.push_back({keys.data() + t * kDim, values.data() + t * kDim, positions.data() + t,
                       mass.data() + t, std::min<int64_t>(5, kTokens - t)});
    }
    kernels::HeadAttention a{};
    a.q = q.data();
    a.q_stride = kGroup * kDim;
    a.out = out.data();
    a.out_stride = kGroup * kDim;
    a.blocks = views.data();
    a.n_blocks = static_cast<int64_t>(views.size());
    a.q_positions = q_positions.data();
    a.m = m;
    a.group = kGroup;
    a.head_dim = kDim;
    a.scale = scale;
    a.track_mass = true;
    a.mass_max = true;
    backend.attention(a);
    for (int64_t t = 0; t < kTokens; ++t)
      EXPECT_NEAR(mass[t], expected[t], 1e-5) << "m " << m << " token " << t;
  }
}

}  // namespace
}  // namespace kvshrink
