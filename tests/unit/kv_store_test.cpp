// The compressed store: compaction keeps exactly the planned tokens with their positions and frees
// the rest (bytes and pool charge fall); attention over several segments merged with the
// online-softmax rule equals attention over one segment holding the same tokens, and so do the
// accumulated attention masses (H2O) normalised over the whole head.
#include "kvstore/kv_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
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

TEST(KvStore, CompactionKeepsPlannedTokensAndFreesTheRest) {
  auto pool = std::make_shared<kvstore::KvMemoryPool>();
  kvstore::KvStore kv(2, 1, kDim, 3, {}, pool);
  const auto keys = testing::normal_values(10 * kDim, 1), values = testing::normal_values(10 * kDim, 2);
  for (int64_t layer = 0; layer < 2; ++layer) fill(kv.head(layer, 0).tail(), keys, values, 0, 10);
  kv.advance(10);
  kv.account();
  const uint64_t full = kv.bytes_held();
  EXPECT_EQ(full, kv.full_bytes());
  EXPECT_EQ(pool->in_use(), full);

  kv.compact({{0, 3, 9}, {1, 2}});
  EXPECT_EQ(kv.head(0, 0).positions(), (std::vector<int32_t>{0, 3, 9}));
  EXPECT_EQ(kv.head(1, 0).positions(), (std::vector<int32_t>{1, 2}));
  const auto& kept = kv.head(0, 0).segments()[0];
  for (int64_t i = 0; i < kDim; ++i) EXPECT_EQ(kept.keys()[kDim + i], keys[3 * kDim + i]);
  EXPECT_EQ(kv.bytes_held(), full * 5 / 20);
  EXPECT_EQ(pool->in_use(), kv.bytes_held());
  EXPECT_EQ(pool->peak(), full);
  EXPECT_EQ(kv.full_bytes(), full);  // the denominator stays: all positions so far

  // new tokens go to the tail and keep ascending positions
  kv.head(0, 0).tail().append(keys.data(), values.data(), 10);
  EXPECT_EQ(kv.head(0, 0).positions(), (std::vector<int32_t>{0, 3, 9, 10}));
  EXPECT_THROW(kv.compact({{2, 1}, {0}}), std::invalid_argument);  // not ascending
  EXPECT_THROW(kv.compact({{0}}), std::invalid_argument);          // wrong head count
}

TEST(KvStore, CompactedCopyLeavesTheOriginal) {
  auto pool = std::make_shared<kvstore::KvMemoryPool>();
  kvstore::KvStore kv(1, 1, kDim, 3, {.query_window = 2}, pool);
  const auto keys = testing::normal_values(6 * kDim, 3);
  fill(kv.head(0, 0).tail(), keys, keys, 0, 6);
  kv.advance(6);
  kv.account();
  auto copy = kv.compacted_copy({{4, 5}});
  EXPECT_EQ(kv.head(0, 0).tokens(), 6);
  EXPECT_EQ(copy.head(0, 0).tokens(), 2);
  EXPECT_EQ(copy.next_position(), 6);
  EXPECT_EQ(pool->in_use(), kv.bytes_held() + copy.bytes_held());
}

TEST(KvMemoryPool, CapacityIsEnforced) {
  kvstore::KvMemoryPool pool(100);
  pool.charge(60);
  EXPECT_THROW(pool.charge(41), std::runtime_error);
  pool.release(60);
  EXPECT_NO_THROW(pool.charge(100));
}

// Attention of m queries (group 3) over 12 tokens in one segment vs split 5 + 7 and merged.
TEST(SegmentedAttention, MergedSegmentsEqualOneSegment) {
  constexpr int64_t kGroup = 3, kTokens = 12, kQueries = 4;
  const auto keys = testing::normal_values(kTokens * kDim, 4),
             values = testing::normal_values(kTokens * kDim, 5);
  const auto q = testing::normal_values(kQueries * kGroup * kDim, 6);
  std::vector<int32_t> q_positions = {3, 7, 11, 11};
  std::vector<int32_t> positions(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) positions[t] = static_cast<int32_t>(t);
  kernels::cpu::CpuBackend backend;

  auto run = [&](int64_t first, int64_t n, float* out, float* lse, float* mass, const float* lse_ref) {
    kernels::HeadAttention a{};
    a.q = q.data();
    a.q_stride = kGroup * kDim;
    a.out = out;
    a.out_stride = kGroup * kDim;
    a.keys = keys.data() + first * kDim;
    a.values = values.data() + first * kDim;
    a.kv_positions = positions.data() + first;
    a.q_positions = q_positions.data();
    a.m = kQueries;
    a.n_kv = n;
    a.group = kGroup;
    a.head_dim = kDim;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
    a.lse = lse;
    a.key_mass = mass;
    a.lse_reference = lse_ref;
    backend.attention(a);
  };
  const size_t out_size = kQueries * kGroup * kDim, lse_size = kQueries * kGroup;
  std::vector<float> whole(out_size), whole_mass(kTokens, 0.0f);
  run(0, kTokens, whole.data(), nullptr, whole_mass.data(), nullptr);

  std::vector<float> merged(out_size), lse(lse_size), part(out_size), part_lse(lse_size);
  run(0, 5, merged.data(), lse.data(), nullptr, nullptr);
  run(5, 7, part.data(), part_lse.data(), nullptr, nullptr);
  kernels::merge_attention(merged.data(), kGroup * kDim, lse.data(), part.data(), kGroup * kDim,
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
}

}  // namespace
}  // namespace kvshrink
