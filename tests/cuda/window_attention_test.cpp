// The device observation-window attention (kernels/cuda/window_attention.h) against the CPU
// backend on the same inputs, at head_dim 64 and 128, group 1 and 3: 8 window queries (one before
// every token: it adds nothing) over blocks of different lengths (one empty, one of 1000 tokens over
// many tiles), positions with gaps as after eviction; and a window of no query (all 0). Tolerance
// per token (f32 sums in other orders, expf against the CPU's fast exp): 1e-5 relative + 1e-9
// absolute (scores are ~1/tokens). The refusals run without a device; the rest is skipped without one.
#include "kernels/cuda/window_attention.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

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
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::KvBlockView;
using kernels::KvDtype;
using kernels::cuda::DeviceBuffer;

// Keys of blocks of `lengths` tokens at positions from 10, every 4th skipped (evicted), on the host
// and (copies) on the device.
struct Blocks {
  Blocks(const std::vector<int64_t>& lengths, int64_t d) {
    int32_t position = 10;
    for (size_t b = 0; b < lengths.size(); ++b) {
      keys.push_back(
          testing::normal_values(static_cast<size_t>(lengths[b] * d), 40 + static_cast<uint32_t>(b)));
      positions.emplace_back();
      for (int64_t t = 0; t < lengths[b]; ++t) {
        positions.back().push_back(position);
        position += position % 4 == 3 ? 2 : 1;
      }
      tokens += lengths[b];
    }
    for (size_t b = 0; b < lengths.size(); ++b) {
      host_views.push_back(
          {keys[b].data(), nullptr, positions[b].data(), nullptr, lengths[b], KvDtype::kF32});
      if (lengths[b] == 0) {
        device_views.push_back({nullptr, nullptr, nullptr, nullptr, 0, KvDtype::kF32});
        continue;
      }
      device_keys.emplace_back(keys[b]);
      device_positions.emplace_back(positions[b]);
      device_views.push_back({device_keys.back().data(), nullptr, device_positions.back().data(), nullptr,
                              lengths[b], KvDtype::kF32});
    }
  }
  std::vector<std::vector<float>> keys;
  std::vector<std::vector<int32_t>> positions;
  std::vector<KvBlockView> host_views, device_views;  // both arrays on the host
  std::vector<DeviceBuffer<float>> device_keys;
  std::vector<DeviceBuffer<int32_t>> device_positions;
  int64_t tokens = 0;
};

TEST(CudaWindowAttention, RefusesWhatItDoesNotTake) {
  const auto refused = [](int64_t n_queries, int64_t group, int64_t head_dim) {
    EXPECT_THROW(kernels::cuda::window_attention_mean(nullptr, 0, nullptr, n_queries, group, head_dim, 1.0f,
                                                      nullptr, 0, nullptr, nullptr),
                 std::invalid_argument);
  };
  refused(8, 1, 256);  // head_dim beyond kAttentionMaxHeadDim
  refused(8, 1, 0);
  refused(8, 0, 128);  // no query head
  refused(-1, 1, 128);
}

TEST(CudaWindowAttention, MatchesTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  constexpr int64_t kWindow = 8;
  kernels::cpu::CpuBackend cpu;
  for (const int64_t d : {64, 128}) {
    for (const int64_t group : {1, 3}) {
      SCOPED_TRACE("head_dim " + std::to_string(d) + ", group " + std::to_string(group));
      const Blocks blocks({100, 0, 37, 1000, 45}, d);
      const int64_t q_stride = group * d + 8;
      const auto q = testing::normal_values(static_cast<size_t>(kWindow * q_stride), 50);
      // the window: the last 7 tokens' positions, and one before every token
      std::vector<int32_t> q_positions = {3};
      const auto& newest = blocks.positions.back();
      q_positions.insert(q_positions.end(), newest.end() - (kWindow - 1), newest.end());
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      std::vector<float> want(static_cast<size_t>(blocks.tokens), 7.0f);
      cpu.window_attention_mean(q.data(), q_stride, q_positions.data(), kWindow, group, d, scale,
                                blocks.host_views, want.data());
      DeviceBuffer<float> d_q(q), d_out(std::vector<float>(want.size(), 7.0f));
      DeviceBuffer<int32_t> d_q_positions(q_positions);
      kernels::cuda::window_attention_mean(
          d_q.data(), q_stride, d_q_positions.data(), kWindow, group, d, scale, blocks.device_views.data(),
          static_cast<int64_t>(blocks.device_views.size()), d_out.data(), nullptr);
      KVSHRINK_CUDA_CHECK(cudaDeviceSynchronize());
      const auto got = d_out.download();
      for (size_t t = 0; t < want.size(); ++t)
        ASSERT_NEAR(got[t], want[t], 1e-5 * want[t] + 1e-9) << "token " << t;

      // no query: every token 0
      kernels::cuda::window_attention_mean(
          d_q.data(), q_stride, d_q_positions.data(), 0, group, d, scale, blocks.device_views.data(),
          static_cast<int64_t>(blocks.device_views.size()), d_out.data(), nullptr);
      KVSHRINK_CUDA_CHECK(cudaDeviceSynchronize());
      for (const float x : d_out.download()) ASSERT_EQ(x, 0.0f);
    }
  }
}

}  // namespace
}  // namespace kvshrink
