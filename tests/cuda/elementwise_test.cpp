// The CUDA row-wise and elementwise kernels (kernels/cuda/elementwise.h) against the CPU backend on
// the same inputs. Tolerances: add exact; RMSNorm 1e-5 relative (f32 partial sums against the CPU's
// f64 sum); RoPE 1e-6 relative (the same f64 angles, f32 rotation with or without FMA contraction);
// SiLU * up 1e-5 relative (expf against the CPU's vector exp, 4e-7). Skipped without a device.
#include "kernels/cuda/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/device_buffer.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::cuda::DeviceBuffer;

class CudaElementwiseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  }
  kernels::cpu::CpuBackend cpu_;
};

void expect_near_relative(const std::vector<float>& gpu, const std::vector<float>& cpu, double tolerance) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_NEAR(gpu[i], cpu[i], tolerance * (1.0 + std::abs(cpu[i]))) << "element " << i;
  }
}

TEST_F(CudaElementwiseTest, RmsNormMatchesTheCpu) {
  constexpr int64_t kRows = 37, kCols = 576;  // a row longer than the block, rows not a power of 2
  const auto x = testing::normal_values(kRows * kCols, 1);
  const auto gamma = testing::normal_values(kCols, 2);
  std::vector<float> expected(x.size());
  cpu_.rms_norm(x.data(), gamma.data(), expected.data(), kRows, kCols, 1e-5f);
  DeviceBuffer<float> d_x(x), d_gamma(gamma), d_y(x.size());
  kernels::cuda::rms_norm(d_x.data(), d_gamma.data(), d_y.data(), kRows, kCols, 1e-5f, nullptr);
  expect_near_relative(d_y.download(), expected, 1e-5);
  kernels::cuda::rms_norm(d_x.data(), d_gamma.data(), d_x.data(), kRows, kCols, 1e-5f, nullptr);  // in place
  expect_near_relative(d_x.download(), expected, 1e-5);
}

TEST_F(CudaElementwiseTest, RopeMatchesTheCpuAtLongPositions) {
  constexpr int64_t kTokens = 5, kHeads = 9, kDim = 64;
  auto x = testing::normal_values(kTokens * kHeads * kDim, 3);
  const std::vector<int32_t> positions{0, 1, 17, 4095, 8191};
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<int32_t> d_positions(positions);
  cpu_.rope(x.data(), kTokens, kHeads, kDim, positions.data(), 10000.0f);
  kernels::cuda::rope(d_x.data(), kTokens, kHeads, kDim, d_positions.data(), 10000.0f, nullptr);
  expect_near_relative(d_x.download(), x, 1e-6);
}

TEST_F(CudaElementwiseTest, SiluMulAndAddMatchTheCpu) {
  constexpr int64_t kCount = 1536 * 3 + 5;  // not a multiple of the block
  auto gate = testing::normal_values(kCount, 4);
  const auto up = testing::normal_values(kCount, 5);
  DeviceBuffer<float> d_gate(gate), d_up(up);
  cpu_.silu_mul(gate.data(), up.data(), kCount);
  kernels::cuda::silu_mul(d_gate.data(), d_up.data(), kCount, nullptr);
  expect_near_relative(d_gate.download(), gate, 1e-5);

  auto y = testing::normal_values(kCount, 6);
  DeviceBuffer<float> d_y(y);
  cpu_.add(y.data(), up.data(), kCount);
  kernels::cuda::add(d_y.data(), d_up.data(), kCount, nullptr);
  EXPECT_EQ(d_y.download(), y);
}

}  // namespace
}  // namespace kvshrink
