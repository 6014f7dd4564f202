// The device merge of two token sets' attention (kernels/cuda/merge_attention.h) against the CPU
// backend on the same inputs, with rows where either side sees no token (-inf). Tolerance 1e-6
// relative (expf / logf against std::exp / std::log). Skipped without a device.
#include "kernels/cuda/merge_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/device_buffer.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::cuda::DeviceBuffer;

TEST(CudaMergeAttention, MatchesTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  constexpr int64_t kRows = 5, kGroup = 3, kDim = 64, kStride = kGroup * kDim + 8;  // padded rows
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  auto out = testing::normal_values(kRows * kStride, 1);
  const auto out_b = testing::normal_values(kRows * kStride, 2);
  auto lse = testing::normal_values(kRows * kGroup, 3);
  auto lse_b = testing::normal_values(kRows * kGroup, 4);
  lse[1] = kNone;    // only B
  lse_b[4] = kNone;  // only A
  lse[7] = lse_b[7] = kNone;
  DeviceBuffer<float> d_out(out), d_out_b(out_b), d_lse(lse), d_lse_b(lse_b);
  kernels::cpu::CpuBackend cpu;
  cpu.merge_attention(out.data(), kStride, lse.data(), out_b.data(), kStride, lse_b.data(), kRows, kGroup,
                      kDim);
  kernels::cuda::merge_attention(d_out.data(), kStride, d_lse.data(), d_out_b.data(), kStride, d_lse_b.data(),
                                 kRows, kGroup, kDim, nullptr);
  const auto got = d_out.download(), got_lse = d_lse.download();
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(got[i], out[i], 1e-6 * (1 + std::abs(out[i]))) << i;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lse[i])) {
      EXPECT_EQ(got_lse[i], lse[i]) << i;
    } else {
      EXPECT_NEAR(got_lse[i], lse[i], 1e-6 * (1 + std::abs(lse[i]))) << i;
    }
  }
}

}  // namespace
}  // namespace kvshrink
