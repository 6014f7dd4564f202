// The device paged attention (kernels/cuda/paged_attention.h) against the CPU backend on the same
// inputs, at head_dim 64 and 128: decode batches (group 1 and 3, calls of 13 to 5000 tokens, the
// longest over several split chunks), prefill batches (causal, the new tokens in the last block,
// with a decode call among them), a query that sees no token (lse -inf, out 0), the mass alone (out
// null) against lse_reference and the mass normalised over the call's own tokens. Blocks of
// different lengths (one empty), positions with gaps as after eviction. Keys and values f32, and a
// mixed batch with them stored as f16 against the CPU backend on f32 copies of the rounded values.
// Tolerances (f32 sums in other orders, expf against the CPU's fast exp): out 1e-5 relative (1e-4
// for f16) + 1e-6 absolute; lse 1e-5 absolute (-inf exactly); the mass added 1e-5 relative (1e-4
// for f16) + 1e-7 absolute. The refusals run without a device; the rest is skipped without one.
#include "kernels/cuda/paged_attention.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/device_buffer.h"
#include "support/half_values.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::HeadAttention;
using kernels::KvBlockView;
using kernels::KvDtype;
using kernels::cuda::AttentionBatchShape;
using kernels::cuda::DeviceBuffer;

constexpr float kNone = -std::numeric_limits<float>::infinity();

// A KV block on the host: keys and values [n x head_dim], positions [n], mass [n].
struct Block {
  std::vector<float> keys, values, mass;
  std::vector<int32_t> positions;
};

enum class Mass { kNone, kOwn, kReference };  // no mass; normalised over the call; by lse_reference

// One call on the host: its queries, blocks and outputs (out and lse start at a sentinel).
struct Call {
  int64_t m = 0, group = 0, head_dim = 0;
  int64_t q_stride = 0, out_stride = 0;  // padded rows
  std::vector<float> q, out, lse, lse_reference;
  std::vector<int32_t> q_positions;
  std::vector<Block> blocks;
  bool with_out = true, with_lse = true;
  Mass mass = Mass::kNone;
  KvDtype kv_dtype = KvDtype::kF32;  // how the device holds the blocks' keys and values
};

// Blocks of `lengths` tokens at positions from `first`, every 4th position skipped (evicted)
// except in the last block, which holds the m newest tokens at consecutive positions; the queries
// sit at the last m positions. `seed` picks the values.
Call make_call(int64_t m, int64_t group, int64_t d, const std::vector<int64_t>& lengths, uint32_t seed,
               int32_t first = 0) {
  Call c;
  c.m = m;
  c.group = group;
  c.head_dim = d;
  c.q_stride = group * d + 8;
  c.out_stride = group * d + 4;
  c.q = testing::normal_values(static_cast<size_t>(m * c.q_stride), seed);
  c.out.assign(static_cast<size_t>(m * c.out_stride), 7.0f);
  c.lse.assign(static_cast<size_t>(m * group), 7.0f);
  int32_t position = first;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const auto n = static_cast<size_t>(lengths[b]);
    Block block;
    block.keys = testing::normal_values(n * d, seed + 100 + static_cast<uint32_t>(b));
    block.values = testing::normal_values(n * d, seed + 200 + static_cast<uint32_t>(b));
    block.mass = testing::normal_values(n, seed + 300 + static_cast<uint32_t>(b), 0.01f);
    for (auto& x : block.mass) x = std::abs(x);
    const bool last = b + 1 == lengths.size();
    for (size_t t = 0; t < n; ++t) {
      block.positions.push_back(position);
      position += !last && position % 4 == 3 ? 2 : 1;
    }
    c.blocks.push_back(std::move(block));
  }
  const auto& newest = c.blocks.back().positions;
  c.q_positions.assign(newest.end() - m, newest.end());
  return c;
}

// c with its mass tracked: normalised over its own tokens, or (out and lse off) over a larger set
// whose log-denominators lse_reference holds.
Call with_mass(Call c, Mass mass) {
  c.mass = mass;
  if (mass == Mass::kReference) {
    c.with_out = c.with_lse = false;
    c.lse_reference = testing::normal_values(static_cast<size_t>(c.m * c.group), 77, 0.3f);
    for (auto& x : c.lse_reference) x += 9.0f;  // above any call's own log-denominator here
  }
  return c;
}

// c with its keys and values rounded to f16 and held so on the device (the CPU backend reads the
// rounded values as f32).
Call with_f16_kv(Call c) {
  for (auto& block : c.blocks) {
    block.keys = testing::half_rounded(std::move(block.keys));
    block.values = testing::half_rounded(std::move(block.values));
  }
  c.kv_dtype = KvDtype::kF16;
  return c;
}

// The call's arguments over the given arrays (host or device).
HeadAttention call_arguments(const Call& c, const float* q, float* out, float* lse,
                             const float* lse_reference, const int32_t* q_positions,
                             const KvBlockView* blocks) {
  HeadAttention a{q,
                  c.q_stride,
                  c.with_out ? out : nullptr,
                  c.out_stride,
                  blocks,
                  static_cast<int64_t>(c.blocks.size()),
                  q_positions,
                  c.m,
                  c.group,
                  c.head_dim,
                  1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  a.lse = c.with_lse ? lse : nullptr;
  a.track_mass = c.mass != Mass::kNone;
  a.lse_reference = c.mass == Mass::kReference ? lse_reference : nullptr;
  return a;
}

// A call's arrays on the device, its blocks' views pointing there (keys and values as c.kv_dtype).
struct DeviceCall {
  explicit DeviceCall(const Call& c)
      : q(c.q),
        out(c.out),
        lse(c.lse),
        lse_reference(c.lse_reference),
        q_positions(c.q_positions),
        views(size_t{0}) {
    std::vector<KvBlockView> host_views;
    for (const auto& block : c.blocks) {
      const void *block_keys = nullptr, *block_values = nullptr;
      if (c.kv_dtype == KvDtype::kF16) {
        block_keys = keys_f16.emplace_back(testing::to_f16(block.keys)).data();
        block_values = values_f16.emplace_back(testing::to_f16(block.values)).data();
      } else {
        block_keys = keys.emplace_back(block.keys).data();
        block_values = values.emplace_back(block.values).data();
      }
      mass.emplace_back(block.mass);
      positions.emplace_back(block.positions);
      host_views.push_back({block_keys, block_values, positions.back().data(), mass.back().data(),
                            static_cast<int64_t>(block.positions.size()), c.kv_dtype});
    }
    views = DeviceBuffer<KvBlockView>(host_views);
  }
  HeadAttention arguments(const Call& c) {
    return call_arguments(c, q.data(), out.data(), lse.data(), lse_reference.data(), q_positions.data(),
                          views.data());
  }

  DeviceBuffer<float> q, out, lse, lse_reference;
  DeviceBuffer<int32_t> q_positions;
  std::vector<DeviceBuffer<float>> keys, values, mass;
  std::vector<DeviceBuffer<uint16_t>> keys_f16, values_f16;  // f16 bits, for KvDtype::kF16
  std::vector<DeviceBuffer<int32_t>> positions;
  DeviceBuffer<KvBlockView> views;
};

AttentionBatchShape shape_of(const std::vector<Call>& calls) {
  AttentionBatchShape shape;
  for (const auto& c : calls) {
    int64_t tokens = 0;
    for (const auto& block : c.blocks) tokens += static_cast<int64_t>(block.positions.size());
    shape.max_head_dim = std::max(shape.max_head_dim, c.head_dim);
    shape.max_group = std::max(shape.max_group, c.group);
    shape.max_m = std::max(shape.max_m, c.m);
    shape.max_tokens = std::max(shape.max_tokens, tokens);
    shape.track_mass = shape.track_mass || c.mass != Mass::kNone;
  }
  return shape;
}

void expect_out_near(const std::vector<float>& got, const std::vector<float>& want, double relative,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], relative * std::abs(want[i]) + 1e-6) << what << " [" << i << "]";
}

void expect_lse_near(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      ASSERT_EQ(got[i], want[i]) << what << " [" << i << "]";
    } else {
      ASSERT_NEAR(got[i], want[i], 1e-5) << what << " [" << i << "]";
    }
  }
}

// The mass each side added to `before`: `relative` + 1e-7 absolute.
void expect_mass_near(const std::vector<float>& got, const std::vector<float>& want,
                      const std::vector<float>& before, double relative, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], relative * std::abs(want[i] - before[i]) + 1e-7) << what << " [" << i << "]";
}

// The batch through the CPU backend (on copies of the host arrays, f32) and the device kernels
// (keys and values as each call's kv_dtype); every output compared, out and the mass to `relative`.
void expect_batch_matches(const std::vector<Call>& calls, double relative = 1e-5) {
  std::vector<Call> cpu_calls = calls;
  std::vector<HeadAttention> cpu_args;
  std::vector<std::vector<KvBlockView>> cpu_views(calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    Call& c = cpu_calls[i];
    for (auto& block : c.blocks)
      cpu_views[i].push_back({block.keys.data(), block.values.data(), block.positions.data(),
                              block.mass.data(), static_cast<int64_t>(block.positions.size()),
                              KvDtype::kF32});
    cpu_args.push_back(call_arguments(c, c.q.data(), c.out.data(), c.lse.data(), c.lse_reference.data(),
                                      c.q_positions.data(), cpu_views[i].data()));
  }
  kernels::cpu::CpuBackend cpu;
  cpu.attention(cpu_args);

  std::vector<DeviceCall> device;
  device.reserve(calls.size());
  std::vector<HeadAttention> device_args;
  for (const auto& c : calls) device_args.push_back(device.emplace_back(c).arguments(c));
  const DeviceBuffer<HeadAttention> d_args(device_args);
  kernels::cuda::attention(d_args.data(), static_cast<int64_t>(calls.size()), shape_of(calls), nullptr);
  KVSHRINK_CUDA_CHECK(cudaDeviceSynchronize());

  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string what = "call " + std::to_string(i);
    expect_out_near(device[i].out.download(), cpu_calls[i].out, relative, what + " out");
    expect_lse_near(device[i].lse.download(), cpu_calls[i].lse, what + " lse");
    for (size_t b = 0; b < calls[i].blocks.size(); ++b) {
      if (calls[i].blocks[b].mass.empty()) continue;
      expect_mass_near(device[i].mass[b].download(), cpu_calls[i].blocks[b].mass, calls[i].blocks[b].mass,
                       relative, what + " block " + std::to_string(b) + " mass");
    }
  }
}

bool have_device(std::string* why) {
  return !kernels::cuda::cuda_devices(why).empty();
}

TEST(CudaPagedAttention, RefusesWhatItDoesNotTake) {
  const auto refused = [](AttentionBatchShape shape, int64_t n_calls = 1) {
    EXPECT_THROW(kernels::cuda::attention(nullptr, n_calls, shape, nullptr), std::invalid_argument);
  };
  refused({256, 4, 1, 100});  // head_dim beyond kAttentionMaxHeadDim
  refused({0, 4, 1, 100});
  refused({128, 0, 1, 100});  // no query head
  refused({128, 4, -1, 100});
  refused({128, 4, 1, 100}, -1);
  refused({128, 4, 65536 * 32, 100});            // more query tiles than one launch takes
  refused({128, 4, 1, int64_t{1} << 40, true});  // more mass tiles than one launch takes
  // an empty batch is no work, whatever its shape
  EXPECT_NO_THROW(kernels::cuda::attention(nullptr, 0, {}, nullptr));
}

TEST(CudaPagedAttention, DecodeMatchesTheCpuBackend) {
  std::string why;
  if (!have_device(&why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  for (const int64_t d : {64, 128}) {
    const std::vector<Call> calls = {
        make_call(1, 3, d, {256, 256, 1000, 2000, 1488}, 1),  // 5000 tokens: several split chunks
        make_call(1, 1, d, {37}, 2),
        make_call(1, 3, d, {300, 0, 13}, 3),
        make_call(1, 3, d, {50}, 4, 100),  // below: its query sees no token
        with_mass(make_call(1, 1, d, {100, 33}, 5), Mass::kOwn),
        with_mass(make_call(1, 3, d, {700, 20}, 6), Mass::kReference),
    };
    std::vector<Call> batch = calls;
    batch[3].q_positions = {5};
    SCOPED_TRACE("head_dim " + std::to_string(d));
    expect_batch_matches(batch);
  }
}

TEST(CudaPagedAttention, PrefillMatchesTheCpuBackend) {
  std::string why;
  if (!have_device(&why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  for (const int64_t d : {64, 128}) {
    std::vector<Call> batch = {
        make_call(70, 3, d, {100, 45, 70}, 11),  // tiles of 32 queries: 70 takes a partial third
        with_mass(make_call(33, 1, d, {200, 33}, 12), Mass::kOwn),
        with_mass(make_call(5, 3, d, {64, 0, 5}, 13), Mass::kReference),
        make_call(3, 1, d, {40}, 14, 100),
        make_call(1, 3, d, {300, 1}, 15),  // a decode call in the batch
        with_mass(make_call(40, 3, d, {600, 40}, 16), Mass::kOwn),
    };
    batch[3].q_positions = {3, 120, 200};  // sees nothing, some of the block, all of it
    SCOPED_TRACE("head_dim " + std::to_string(d));
    expect_batch_matches(batch);
  }
}

// Keys and values stored as f16 (the KV store's default): prefill, decode and mass kernels over a
// batch of both kinds of call, against the CPU backend on the rounded values as f32.
TEST(CudaPagedAttention, F16KeysAndValuesMatchTheCpuBackendOnTheRoundedValues) {
  std::string why;
  if (!have_device(&why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  for (const int64_t d : {64, 128}) {
    const std::vector<Call> batch = {
        with_f16_kv(make_call(1, 3, d, {256, 256, 1000, 2000, 1488}, 21)),  // several split chunks
        with_f16_kv(make_call(70, 3, d, {100, 0, 45, 70}, 22)),
        with_f16_kv(with_mass(make_call(1, 1, d, {100, 33}, 23), Mass::kOwn)),
        with_f16_kv(with_mass(make_call(33, 3, d, {200, 33}, 24), Mass::kOwn)),
        with_f16_kv(with_mass(make_call(5, 3, d, {64, 5}, 25), Mass::kReference)),
    };
    SCOPED_TRACE("head_dim " + std::to_string(d));
    expect_batch_matches(batch, 1e-4);
  }
}

}  // namespace
}  // namespace kvshrink
