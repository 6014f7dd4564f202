// The device low-rank attention (kernels/cuda/low_rank_attention.h) against the CPU backend on the
// same inputs, at head_dim 64 and 128: post- and pre-RoPE keys, group 1 and 3, decode (m 1) and
// prefill (m 4, 5), rank buckets of ranks 8, 24, head_dim / 2 and head_dim (and an empty one) with
// their positions interleaved, queries that see no token (lse -inf, out 0). Coefficients f32, and
// a batch with them stored as f16 against the CPU backend on f32 copies of the rounded values.
// Tolerances (f32 sums in other orders, expf against the CPU's fast exp): out 1e-5 relative (1e-4
// for f16) + 1e-6 absolute; lse 1e-5 absolute (-inf exactly). The refusals run without a device;
// the rest is skipped without one.
// (Named cuda_ since tests/unit/low_rank_attention_test.cpp has the plain name.)
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/low_rank_attention.h"
#include "support/half_values.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::KvDtype;
using kernels::LowRankAttention;
using kernels::LowRankBucket;
using kernels::cuda::DeviceBuffer;
using kernels::cuda::LowRankBatchShape;

// A rank bucket on the host: coefficients [n x rank], positions [n].
struct Bucket {
  int64_t rank = 0;
  std::vector<float> keys, values;
  std::vector<int32_t> positions;
};

// One call on the host: queries, basis, buckets and outputs (out and lse start at a sentinel).
struct Call {
  int64_t m = 0, group = 0, head_dim = 0;
  int64_t q_stride = 0, out_stride = 0;  // padded rows
  bool pre_rope_keys = false;
  std::vector<float> q, out, lse, key_basis, value_basis;
  std::vector<int32_t> q_positions;
  std::vector<Bucket> buckets;
  KvDtype kv_dtype = KvDtype::kF32;  // how the device holds the buckets' coefficients
};

// `tokens` tokens at positions 10, 11, 12, 14, 15, 16, 18, ... (every 4th evicted) spread over
// buckets of ranks 8, 24, d/2 and d, plus an empty one of rank 16; the queries at the last m
// positions. Bases [d x d] of N(0, 1/d) entries.
Call make_call(int64_t m, int64_t group, int64_t d, bool pre_rope_keys, int64_t tokens, uint32_t seed) {
  Call c;
  c.m = m;
  c.group = group;
  c.head_dim = d;
  c.q_stride = group * d + 8;
  c.out_stride = group * d + 4;
  c.pre_rope_keys = pre_rope_keys;
  c.q = testing::normal_values(static_cast<size_t>(m * c.q_stride), seed);
  c.out.assign(static_cast<size_t>(m * c.out_stride), 7.0f);
  c.lse.assign(static_cast<size_t>(m * group), 7.0f);
  const float basis_scale = 1.0f / std::sqrt(static_cast<float>(d));
  c.key_basis = testing::normal_values(static_cast<size_t>(d * d), seed + 1, basis_scale);
  c.value_basis = testing::normal_values(static_cast<size_t>(d * d), seed + 2, basis_scale);
  for (const int64_t rank : {int64_t{8}, int64_t{24}, d / 2, d, int64_t{16}})
    c.buckets.push_back({rank, {}, {}, {}});
  const auto live = static_cast<int64_t>(c.buckets.size()) - 1;  // the last stays empty
  std::vector<int32_t> all;
  for (int64_t k = 0; k < tokens; ++k) {
    const auto position = static_cast<int32_t>(10 + k + k / 3);
    c.buckets[static_cast<size_t>((k * 7 + k / 5) % live)].positions.push_back(position);
    all.push_back(position);
  }
  uint32_t bucket_seed = seed + 10;
  for (auto& bucket : c.buckets) {
    const auto count = static_cast<size_t>(bucket.positions.size() * bucket.rank);
    bucket.keys = testing::normal_values(count, bucket_seed++);
    bucket.values = testing::normal_values(count, bucket_seed++);
  }
  c.q_positions.assign(all.end() - m, all.end());
  return c;
}

// c with its coefficients rounded to f16 and held so on the device (the CPU backend reads the
// rounded values as f32).
Call with_f16_coefficients(Call c) {
  for (auto& bucket : c.buckets) {
    bucket.keys = testing::half_rounded(std::move(bucket.keys));
    bucket.values = testing::half_rounded(std::move(bucket.values));
  }
  c.kv_dtype = KvDtype::kF16;
  return c;
}

// The call's arguments over the given arrays (host or device).
LowRankAttention call_arguments(const Call& c, const float* q, float* out, float* lse,
                                const LowRankBucket* buckets, const int32_t* q_positions,
                                const float* key_basis, const float* value_basis) {
  return {q,
          c.q_stride,
          out,
          c.out_stride,
          lse,
          buckets,
          static_cast<int64_t>(c.buckets.size()),
          q_positions,
          key_basis,
          value_basis,
          c.m,
          c.group,
          c.head_dim,
          c.pre_rope_keys,
          10000.0f,
          1.0f / std::sqrt(static_cast<float>(c.head_dim))};
}

// A call's arrays on the device, its buckets pointing there (coefficients as c.kv_dtype).
struct DeviceCall {
  explicit DeviceCall(const Call& c)
      : q(c.q),
        out(c.out),
        lse(c.lse),
        key_basis(c.key_basis),
        value_basis(c.value_basis),
        q_positions(c.q_positions),
        buckets(size_t{0}) {
    std::vector<LowRankBucket> host_buckets;
    for (const auto& bucket : c.buckets) {
      const void *bucket_keys = nullptr, *bucket_values = nullptr;
      if (c.kv_dtype == KvDtype::kF16) {
        bucket_keys = keys_f16.emplace_back(testing::to_f16(bucket.keys)).data();
        bucket_values = values_f16.emplace_back(testing::to_f16(bucket.values)).data();
      } else {
        bucket_keys = keys.emplace_back(bucket.keys).data();
        bucket_values = values.emplace_back(bucket.values).data();
      }
      positions.emplace_back(bucket.positions);
      host_buckets.push_back({bucket_keys, bucket_values, positions.back().data(),
                              static_cast<int64_t>(bucket.positions.size()), bucket.rank, c.kv_dtype});
    }
    buckets = DeviceBuffer<LowRankBucket>(host_buckets);
  }
  LowRankAttention arguments(const Call& c) {
    return call_arguments(c, q.data(), out.data(), lse.data(), buckets.data(), q_positions.data(),
                          key_basis.data(), value_basis.data());
  }

  DeviceBuffer<float> q, out, lse, key_basis, value_basis;
  DeviceBuffer<int32_t> q_positions;
  std::vector<DeviceBuffer<float>> keys, values;
  std::vector<DeviceBuffer<uint16_t>> keys_f16, values_f16;  // f16 bits, for KvDtype::kF16
  std::vector<DeviceBuffer<int32_t>> positions;
  DeviceBuffer<LowRankBucket> buckets;
};

// The batch through the CPU backend (on copies of the host arrays, f32) and the device kernel
// (coefficients as each call's kv_dtype); out compared to `relative`, lse to 1e-5.
void expect_batch_matches(const std::vector<Call>& calls, double relative = 1e-5) {
  std::vector<Call> cpu_calls = calls;
  std::vector<LowRankAttention> cpu_args;
  std::vector<std::vector<LowRankBucket>> cpu_buckets(calls.size());
  LowRankBatchShape shape;
  for (size_t i = 0; i < calls.size(); ++i) {
    Call& c = cpu_calls[i];
    for (auto& bucket : c.buckets)
      cpu_buckets[i].push_back({bucket.keys.data(), bucket.values.data(), bucket.positions.data(),
                                static_cast<int64_t>(bucket.positions.size()), bucket.rank, KvDtype::kF32});
    cpu_args.push_back(call_arguments(c, c.q.data(), c.out.data(), c.lse.data(), cpu_buckets[i].data(),
                                      c.q_positions.data(), c.key_basis.data(), c.value_basis.data()));
    shape.max_head_dim = std::max(shape.max_head_dim, c.head_dim);
    shape.max_group = std::max(shape.max_group, c.group);
    shape.max_m = std::max(shape.max_m, c.m);
  }
  kernels::cpu::CpuBackend cpu;
  cpu.low_rank_attention(cpu_args);

  std::vector<DeviceCall> device;
  device.reserve(calls.size());
  std::vector<LowRankAttention> device_args;
  for (const auto& c : calls) device_args.push_back(device.emplace_back(c).arguments(c));
  const DeviceBuffer<LowRankAttention> d_args(device_args);
  kernels::cuda::low_rank_attention(d_args.data(), static_cast<int64_t>(calls.size()), shape, nullptr);
  KVSHRINK_CUDA_CHECK(cudaDeviceSynchronize());

  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string what = "call " + std::to_string(i);
    const auto out = device[i].out.download(), lse = device[i].lse.download();
    const auto& want_out = cpu_calls[i].out;
    const auto& want_lse = cpu_calls[i].lse;
    for (size_t k = 0; k < want_out.size(); ++k)
      ASSERT_NEAR(out[k], want_out[k], relative * std::abs(want_out[k]) + 1e-6)
          << what << " out [" << k << "]";
    for (size_t k = 0; k < want_lse.size(); ++k) {
      if (std::isinf(want_lse[k])) {
        ASSERT_EQ(lse[k], want_lse[k]) << what << " lse [" << k << "]";
      } else {
        ASSERT_NEAR(lse[k], want_lse[k], 1e-5) << what << " lse [" << k << "]";
      }
    }
  }
}

TEST(CudaLowRankAttention, RefusesWhatItDoesNotTake) {
  const auto refused = [](LowRankBatchShape shape, int64_t n_calls = 1) {
    EXPECT_THROW(kernels::cuda::low_rank_attention(nullptr, n_calls, shape, nullptr), std::invalid_argument);
  };
  refused({256, 4, 1});  // head_dim beyond kAttentionMaxHeadDim
  refused({0, 4, 1});
  refused({128, 0, 1});  // no query head
  refused({128, 4, -1});
  refused({128, 4, 65536});  // more query tokens than one launch takes
  refused({128, 4, 1}, -1);
  EXPECT_NO_THROW(kernels::cuda::low_rank_attention(nullptr, 0, {}, nullptr));  // no work
}

TEST(CudaLowRankAttention, MatchesTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  for (const int64_t d : {64, 128}) {
    std::vector<Call> batch = {
        make_call(1, 3, d, false, 300, 1), make_call(1, 1, d, true, 300, 2),
        make_call(5, 3, d, true, 1200, 3), make_call(5, 1, d, false, 200, 4),
        make_call(1, 3, d, false, 50, 5),  make_call(4, 3, d, true, 90, 6),
        make_call(4, 1, d, false, 90, 7),
    };
    batch[4].q_positions = {5};   // before every token: sees none
    batch[5].q_positions[0] = 9;  // the first query sees none, the others some
    batch[6].q_positions = {9, 40, 70, 200};
    SCOPED_TRACE("head_dim " + std::to_string(d));
    expect_batch_matches(batch);
  }
}

// Coefficients stored as f16 (the KV store's default), post- and pre-RoPE keys, decode and
// prefill, against the CPU backend on the rounded values as f32.
TEST(CudaLowRankAttention, F16CoefficientsMatchTheCpuBackendOnTheRoundedValues) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  for (const int64_t d : {64, 128}) {
    std::vector<Call> batch = {
        with_f16_coefficients(make_call(1, 3, d, false, 300, 31)),
        with_f16_coefficients(make_call(1, 1, d, true, 300, 32)),
        with_f16_coefficients(make_call(5, 3, d, true, 1200, 33)),
        with_f16_coefficients(make_call(4, 1, d, false, 90, 34)),
    };
    batch[3].q_positions = {9, 40, 70, 200};  // the first sees no token
    SCOPED_TRACE("head_dim " + std::to_string(d));
    expect_batch_matches(batch, 1e-4);
  }
}

}  // namespace
}  // namespace kvshrink
