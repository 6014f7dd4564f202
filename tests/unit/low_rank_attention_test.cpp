// Attention over tokens held at reduced rank in a basis (kernels::LowRankAttention, the CPU kernel,
// and engine::mixed_dimension_copy): at full rank it equals dense attention; at rank r it equals
// dense attention over the keys and values reconstructed from r coefficients; rank buckets merged
// with the online-softmax rule equal one dense pass; bytes are counted per coefficient.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <span>

#include "engine/compression/low_rank_projection.h"
#include "engine/compression/pca.h"
#include "kernels/cpu/cpu_backend.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kvstore::HeadBasis;

constexpr int64_t kDim = 16;
constexpr int64_t kGroup = 3;
constexpr float kRopeBase = 10000.0f;

// An orthonormal basis [d x d] (rows = vectors) from the PCA of correlated random samples.
std::vector<float> random_basis(uint32_t seed) {
  const int64_t n = 200;
  auto x = testing::normal_values(static_cast<size_t>(n * kDim), seed);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 1; i < kDim; ++i) x[t * kDim + i] += 0.5f * x[t * kDim + i - 1];
  }
  const auto pca = engine::pca(x, n, kDim);
  return {pca.components.begin(), pca.components.end()};
}

std::shared_ptr<HeadBasis> make_basis(bool pre_rope) {
  auto basis = std::make_shared<HeadBasis>();
  basis->head_dim = kDim;
  basis->latent_dim = kDim;
  basis->pre_rope = pre_rope;
  basis->rope_base = kRopeBase;
  basis->key = random_basis(11);
  basis->value = random_basis(12);
  return basis;
}

// x [n x d] -> U[:r]^T (U[:r] x): the projection onto the first r basis vectors.
std::vector<float> reconstruct(const std::vector<float>& x, int64_t n, const std::vector<float>& basis,
                               int64_t r, kernels::Backend& backend) {
  const auto z = engine::project_rows(x.data(), n, basis, kDim, r, backend);
  std::vector<float> out(x.size(), 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t k = 0; k < r; ++k) {
      for (int64_t i = 0; i < kDim; ++i) out[t * kDim + i] += z[t * r + k] * basis[k * kDim + i];
    }
  }
  return out;
}

struct Queries {
  int64_t m;
  std::vector<float> q;  // [m x group x d]
  std::vector<int32_t> positions;
};

Queries make_queries(int64_t m, int32_t first_position) {
  Queries queries{m, testing::normal_values(static_cast<size_t>(m * kGroup * kDim), 21), {}};
  for (int64_t i = 0; i < m; ++i) queries.positions.push_back(first_position + static_cast<int32_t>(i));
  return queries;
}

struct Output {
  std::vector<float> out;  // [m x group x d]
  std::vector<float> lse;  // [m x group]
};

Output dense_attention(kernels::cpu::CpuBackend& backend, const Queries& qs, const std::vector<float>& keys,
                       const std::vector<float>& values, const std::vector<int32_t>& positions) {
  Output o{std::vector<float>(qs.q.size()), std::vector<float>(static_cast<size_t>(qs.m * kGroup))};
  kernels::HeadAttention a{};
  a.q = qs.q.data();
  a.q_stride = kGroup * kDim;
  a.out = o.out.data();
  a.out_stride = kGroup * kDim;
  const kernels::KvBlockView all{keys.data(), values.data(), positions.data(), nullptr,
                                 static_cast<int64_t>(positions.size())};
  a.blocks = &all;
  a.n_blocks = 1;
  a.q_positions = qs.positions.data();
  a.m = qs.m;
  a.group = kGroup;
  a.head_dim = kDim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  a.lse = o.lse.data();
  backend.attention(a);
  return o;
}

// One kernel call over `segments` (all in one basis).
Output low_rank_attention(kernels::cpu::CpuBackend& backend, const Queries& qs,
                          std::span<const kvstore::LowRankSegment> segments) {
  Output o{std::vector<float>(qs.q.size()), std::vector<float>(static_cast<size_t>(qs.m * kGroup))};
  std::vector<kernels::LowRankBucket> buckets;
  for (const auto& s : segments) s.block->buckets(buckets);
  const auto& basis = *segments[0].basis;
  kernels::LowRankAttention a{};
  a.q = qs.q.data();
  a.q_stride = kGroup * kDim;
  a.out = o.out.data();
  a.out_stride = kGroup * kDim;
  a.lse = o.lse.data();
  a.buckets = buckets.data();
  a.n_buckets = static_cast<int64_t>(buckets.size());
  a.q_positions = qs.positions.data();
  a.key_basis = basis.key.data();
  a.value_basis = basis.value.data();
  a.m = qs.m;
  a.group = kGroup;
  a.head_dim = kDim;
  a.pre_rope_keys = basis.pre_rope;
  a.rope_base = basis.rope_base;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  backend.low_rank_attention(a);
  return o;
}

Output low_rank_attention(kernels::cpu::CpuBackend& backend, const Queries& qs,
                          const kvstore::LowRankSegment& s) {
  return low_rank_attention(backend, qs, std::span<const kvstore::LowRankSegment>(&s, 1));
}

void expect_near(const std::vector<float>& a, const std::vector<float>& b, float tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tolerance) << "at " << i;
}

void expect_same_attention(const Output& got, const Output& expected) {
  expect_near(got.out, expected.out, 2e-5f);
  expect_near(got.lse, expected.lse, 2e-5f);
}

// A head of n full-dimension tokens at positions 0..n-1 with random post-RoPE keys and values.
struct Tokens {
  int64_t n;
  std::vector<float> keys, values;
  std::vector<int32_t> positions;
  std::shared_ptr<kvstore::KvMemoryPool> pool = std::make_shared<kvstore::KvMemoryPool>(
      0, kvstore::HeadSegment::block_bytes(kDim, kernels::KvDtype::kF32));
  kvstore::HeadCache head{kDim, kernels::KvDtype::kF32, false, *pool};
};

Tokens make_tokens(int64_t n) {
  Tokens t{n,
           testing::normal_values(static_cast<size_t>(n * kDim), 31),
           testing::normal_values(static_cast<size_t>(n * kDim), 32),
           {}};
  for (int64_t i = 0; i < n; ++i) {
    t.positions.push_back(static_cast<int32_t>(i));
    t.head.tail().append(t.keys.data() + i * kDim, t.values.data() + i * kDim, static_cast<int32_t>(i));
  }
  return t;
}

// Keeps every token of `t` at `rank` and returns the one low-rank segment.
kvstore::LowRankSegment all_at_rank(kernels::cpu::CpuBackend& backend, const Tokens& t,
                                    const std::shared_ptr<HeadBasis>& basis, int32_t rank) {
  std::vector<int32_t> kept(static_cast<size_t>(t.n));
  std::iota(kept.begin(), kept.end(), 0);
  const std::vector<int32_t> ranks(kept.size(), rank);
  const auto head = engine::mixed_dimension_copy(t.head, kept, ranks, basis, backend);
  EXPECT_EQ(head.tokens(), 0);
  EXPECT_EQ(head.low_rank().size(), 1u);
  return head.low_rank()[0];
}

TEST(LowRankAttentionTest, FullRankEqualsDenseAttention) {
  kernels::cpu::CpuBackend backend;
  const auto t = make_tokens(40);
  for (const bool pre_rope : {false, true}) {
    const auto basis = make_basis(pre_rope);
    // rank d in a segment of its own (the store keeps rank d dense; the kernel must still agree)
    const auto keys = engine::keys_in_basis_space(t.keys.data(), t.positions.data(), t.n, *basis, backend);
    const auto key_coefficients = engine::project_rows(keys.data(), t.n, basis->key, kDim, kDim, backend);
    const auto value_coefficients =
        engine::project_rows(t.values.data(), t.n, basis->value, kDim, kDim, backend);
    kvstore::KvMemoryPool pool(0, kvstore::HeadSegment::block_bytes(kDim, kernels::KvDtype::kF32));
    const kvstore::LowRankSegment segment{
        basis,
        std::make_shared<kvstore::LowRankBlock>(kDim, 1, kernels::KvDtype::kF32, key_coefficients.data(),
                                                value_coefficients.data(), t.positions.data(), t.n, pool)};
    for (const int64_t m : {1, 5}) {
      const auto queries = make_queries(m, 37);  // the later queries see every token, earlier ones not
      const auto dense = dense_attention(backend, queries, t.keys, t.values, t.positions);
      const auto low = low_rank_attention(backend, queries, segment);
      expect_same_attention(low, dense);
    }
  }
}

TEST(LowRankAttentionTest, RankREqualsDenseAttentionOnReconstructedKeysAndValues) {
  kernels::cpu::CpuBackend backend;
  const auto t = make_tokens(50);
  for (const bool pre_rope : {false, true}) {
    const auto basis = make_basis(pre_rope);
    for (const int32_t rank : {1, 4, 8}) {
      const auto segment = all_at_rank(backend, t, basis, rank);
      // Reference: keys reconstructed in the basis's space (pre-RoPE: unrotated, then rotated back).
      auto keys = engine::keys_in_basis_space(t.keys.data(), t.positions.data(), t.n, *basis, backend);
      keys = reconstruct(keys, t.n, basis->key, rank, backend);
      if (pre_rope) backend.rope(keys.data(), t.n, 1, kDim, t.positions.data(), kRopeBase);
      const auto values = reconstruct(t.values, t.n, basis->value, rank, backend);
      const auto queries = make_queries(3, 48);
      const auto dense = dense_attention(backend, queries, keys, values, t.positions);
      const auto low = low_rank_attention(backend, queries, segment);
      expect_same_attention(low, dense);
      // and it differs from attention over the exact keys (the test can fail)
      const auto exact = dense_attention(backend, queries, t.keys, t.values, t.positions);
      float most = 0.0f;
      for (size_t i = 0; i < exact.out.size(); ++i)
        most = std::max(most, std::abs(exact.out[i] - low.out[i]));
      EXPECT_GT(most, 1e-3f) << "rank " << rank;
    }
  }
}

TEST(LowRankAttentionTest, RankBucketsMergedEqualOneDensePass) {
  kernels::cpu::CpuBackend backend;
  const auto t = make_tokens(60);
  const auto basis = make_basis(false);
  // token i kept at rank d, 8, 4 or evicted (every 4th)
  std::vector<int32_t> kept, ranks;
  const int32_t choice[] = {kDim, 8, 4};
  for (int32_t i = 0; i < t.n; ++i) {
    if (i % 4 == 3) continue;
    kept.push_back(i);
    ranks.push_back(choice[i % 4]);
  }
  const auto head = engine::mixed_dimension_copy(t.head, kept, ranks, basis, backend);
  ASSERT_EQ(head.tokens(), 15);  // rank d stays dense
  ASSERT_EQ(head.low_rank().size(), 2u);
  EXPECT_EQ(head.low_rank_tokens(), 30);
  // bytes per coefficient: dense tokens 2d floats + position; rank r tokens 2r floats + position
  const uint64_t expected = 15 * (2 * kDim * 4 + 4) + 15 * (2 * 8 * 4 + 4) + 15 * (2 * 4 * 4 + 4);
  EXPECT_EQ(head.bytes_held(), expected);

  // Reference: one dense pass over every kept token with its reconstructed key and value.
  std::vector<float> keys, values;
  std::vector<int32_t> positions;
  for (size_t i = 0; i < kept.size(); ++i) {
    const std::vector<float> k(t.keys.begin() + kept[i] * kDim, t.keys.begin() + (kept[i] + 1) * kDim);
    const std::vector<float> v(t.values.begin() + kept[i] * kDim, t.values.begin() + (kept[i] + 1) * kDim);
    const auto rk = reconstruct(k, 1, basis->key, ranks[i], backend);
    const auto rv = reconstruct(v, 1, basis->value, ranks[i], backend);
    keys.insert(keys.end(), rk.begin(), rk.end());
    values.insert(values.end(), rv.begin(), rv.end());
    positions.push_back(kept[i]);
  }
  const auto queries = make_queries(1, 60);
  const auto dense = dense_attention(backend, queries, keys, values, positions);

  const auto& full = head.segments().front();
  const std::vector<float> full_keys = full.keys();
  const std::vector<float> full_values = full.values();
  const std::vector<int32_t> full_positions = full.positions();
  auto merged = dense_attention(backend, queries, full_keys, full_values, full_positions);
  for (const auto& segment : head.low_rank()) {
    const auto part = low_rank_attention(backend, queries, segment);
    backend.merge_attention(merged.out.data(), kGroup * kDim, merged.lse.data(), part.out.data(),
                            kGroup * kDim, part.lse.data(), 1, kGroup, kDim);
  }
  expect_same_attention(merged, dense);

  // The same with both buckets in one call (one query projection, one value back-projection),
  // merged with the dense segment; and with five query tokens.
  auto one_call = dense_attention(backend, queries, full_keys, full_values, full_positions);
  const auto buckets = low_rank_attention(backend, queries, head.low_rank());
  backend.merge_attention(one_call.out.data(), kGroup * kDim, one_call.lse.data(), buckets.out.data(),
                          kGroup * kDim, buckets.lse.data(), 1, kGroup, kDim);
  expect_same_attention(one_call, dense);
  const auto five = make_queries(5, 57);  // the first queries do not see the last tokens
  auto five_merged = dense_attention(backend, five, full_keys, full_values, full_positions);
  const auto five_buckets = low_rank_attention(backend, five, head.low_rank());
  backend.merge_attention(five_merged.out.data(), kGroup * kDim, five_merged.lse.data(),
                          five_buckets.out.data(), kGroup * kDim, five_buckets.lse.data(), 5, kGroup, kDim);
  expect_same_attention(five_merged, dense_attention(backend, five, keys, values, positions));
}

TEST(LowRankAttentionTest, ReconstructionErrorsFollowTheCoefficientTails) {
  kernels::cpu::CpuBackend backend;
  const auto t = make_tokens(5);
  const auto basis = make_basis(true);
  const std::vector<int32_t> ranks = {0, 4, kDim};
  const auto errors = engine::reconstruction_errors(t.head, *basis, ranks, backend);
  ASSERT_EQ(errors.size(), 15u);
  auto keys = engine::keys_in_basis_space(t.keys.data(), t.positions.data(), t.n, *basis, backend);
  const auto rk = reconstruct(keys, t.n, basis->key, 4, backend);
  const auto rv = reconstruct(t.values, t.n, basis->value, 4, backend);
  for (int64_t i = 0; i < t.n; ++i) {
    double kd = 0, kn = 0, vd = 0, vn = 0;
    for (int64_t c = 0; c < kDim; ++c) {
      kd += std::pow(keys[i * kDim + c] - rk[i * kDim + c], 2);
      kn += std::pow(keys[i * kDim + c], 2);
      vd += std::pow(t.values[i * kDim + c] - rv[i * kDim + c], 2);
      vn += std::pow(t.values[i * kDim + c], 2);
    }
    EXPECT_NEAR(errors[i * 3 + 0], 2.0f, 1e-5f);
    EXPECT_NEAR(errors[i * 3 + 1], kd / kn + vd / vn, 1e-4);
    EXPECT_NEAR(errors[i * 3 + 2], 0.0f, 1e-5f);
  }
}

// Joint basis over two heads (D = 2d): one shared block per rank; each head's attention equals dense
// attention over its slice of the jointly reconstructed keys and values; bytes are shared.
TEST(LowRankAttentionTest, JointBasisSharesOneBlockAcrossHeads) {
  kernels::cpu::CpuBackend backend;
  const int64_t jd = 2 * kDim;
  engine::JointBasis joint;
  joint.dim = jd;
  for (auto* out : {&joint.key, &joint.value}) {
    const int64_t n = 300;
    auto x = testing::normal_values(static_cast<size_t>(n * jd), out == &joint.key ? 41 : 42);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 1; i < jd; ++i) x[t * jd + i] += 0.7f * x[t * jd + i - 1];
    }
    const auto pca = engine::pca(x, n, jd);
    out->assign(pca.components.begin(), pca.components.end());
  }
  for (int64_t h = 0; h < 2; ++h) {
    auto view = std::make_shared<HeadBasis>();
    view->head_dim = kDim;
    view->latent_dim = jd;
    for (int64_t k = 0; k < jd; ++k) {
      view->key.insert(view->key.end(), joint.key.begin() + k * jd + h * kDim,
                       joint.key.begin() + k * jd + (h + 1) * kDim);
      view->value.insert(view->value.end(), joint.value.begin() + k * jd + h * kDim,
                         joint.value.begin() + k * jd + (h + 1) * kDim);
    }
    joint.heads.push_back(view);
  }
  auto a = make_tokens(20);
  auto b = make_tokens(20);
  b.keys = testing::normal_values(b.keys.size(), 51);
  b.values = testing::normal_values(b.values.size(), 52);
  b.head.clear();
  for (int64_t i = 0; i < b.n; ++i)
    b.head.tail().append(b.keys.data() + i * kDim, b.values.data() + i * kDim, static_cast<int32_t>(i));
  std::vector<int32_t> kept(20);
  std::iota(kept.begin(), kept.end(), 0);
  const std::vector<int32_t> ranks(kept.size(), 12);  // rank 12 of 32: below one head's worth
  const kvstore::HeadCache* heads[] = {&a.head, &b.head};
  const auto copies = engine::joint_dimension_copy(heads, kept, ranks, joint, backend);
  ASSERT_EQ(copies.size(), 2u);
  ASSERT_EQ(copies[0].low_rank().size(), 1u);
  EXPECT_EQ(copies[0].low_rank()[0].block, copies[1].low_rank()[0].block);  // one block, shared
  EXPECT_EQ(copies[0].bytes_held() + copies[1].bytes_held(), static_cast<uint64_t>(20 * (2 * 12 + 1) * 4));

  // Reference: concatenated [k_a, k_b] projected onto the first 12 joint vectors and back.
  std::vector<float> cat_k(static_cast<size_t>(20 * jd)), cat_v(cat_k.size());
  for (int64_t t = 0; t < 20; ++t) {
    std::copy_n(a.keys.data() + t * kDim, kDim, cat_k.data() + t * jd);
    std::copy_n(b.keys.data() + t * kDim, kDim, cat_k.data() + t * jd + kDim);
    std::copy_n(a.values.data() + t * kDim, kDim, cat_v.data() + t * jd);
    std::copy_n(b.values.data() + t * kDim, kDim, cat_v.data() + t * jd + kDim);
  }
  const auto zk = engine::project_rows(cat_k.data(), 20, joint.key, jd, 12, backend);
  const auto zv = engine::project_rows(cat_v.data(), 20, joint.value, jd, 12, backend);
  const auto queries = make_queries(1, 25);
  for (int64_t h = 0; h < 2; ++h) {
    std::vector<float> keys(static_cast<size_t>(20 * kDim), 0.0f), values(keys.size(), 0.0f);
    for (int64_t t = 0; t < 20; ++t) {
      for (int64_t k = 0; k < 12; ++k) {
        for (int64_t i = 0; i < kDim; ++i) {
          keys[t * kDim + i] += zk[t * 12 + k] * joint.key[k * jd + h * kDim + i];
          values[t * kDim + i] += zv[t * 12 + k] * joint.value[k * jd + h * kDim + i];
        }
      }
    }
    const auto dense = dense_attention(backend, queries, keys, values, a.positions);
    const auto low = low_rank_attention(backend, queries, copies[static_cast<size_t>(h)].low_rank()[0]);
    expect_same_attention(low, dense);
  }
}

TEST(LowRankAttentionTest, BadPlansAreRejected) {
  kernels::cpu::CpuBackend backend;
  const auto t = make_tokens(4);
  const auto basis = make_basis(false);
  const std::vector<int32_t> kept = {0, 1};
  EXPECT_THROW(engine::mixed_dimension_copy(t.head, kept, std::vector<int32_t>{4}, basis, backend),
               std::invalid_argument);
  EXPECT_THROW(engine::mixed_dimension_copy(t.head, kept, std::vector<int32_t>{4, 0}, basis, backend),
               std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink
