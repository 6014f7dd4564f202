// Packed weights dequantized to f16 on the device (kernels/cuda/dequantize_f16.h) against
// kernels::cpu::dequantize_row on the same rows, for every packing it takes (F32, F16, BF16 at 100
// columns; Q4_0, Q4_1, Q8_0 at 96; Q4_K, Q6_K at 512), and f32_to_f16 against cpu::fp32_to_fp16.
// Tolerances: F32, F16 and BF16 weights and f32_to_f16 exact (the same f32 values rounded to nearest
// even: bit-identical to fp32_to_fp16 of the CPU's values, including subnormals and overflow to inf);
// the blocked packings within 1e-3 of |value| plus 1e-6 (f16 rounding, 2^-11 relative, of f32 values
// that may differ from the CPU's in the last bit by FMA contraction). Refusals run without a device;
// the rest is skipped without one.
#include "kernels/cuda/dequantize_f16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/weight.h"
#include "support/random_values.h"
#include "support/random_weight.h"

namespace kvshrink {
namespace {

using kernels::TensorType;
using kernels::Weight;
using kernels::cuda::DeviceBuffer;

constexpr auto kUnknownType = static_cast<TensorType>(6);  // Q5_0's id: not a kvshrink type

__half* as_half(DeviceBuffer<uint16_t>& buffer) {
  return reinterpret_cast<__half*>(buffer.data());
}

void skip_without_device() {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
}

TEST(CudaDequantizeF16, RefusesWhatItDoesNotTake) {
  EXPECT_FALSE(kernels::cuda::dequantize_to_f16_supports(kUnknownType));
  EXPECT_THROW(kernels::cuda::dequantize_to_f16(kUnknownType, nullptr, 4, 64, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::dequantize_to_f16(TensorType::Q4_1, nullptr, 4, 40, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::dequantize_to_f16(TensorType::Q4_K, nullptr, 4, 288, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::dequantize_to_f16(TensorType::Q6_K, nullptr, 4, 32, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::dequantize_to_f16(TensorType::F16, nullptr, -1, 64, nullptr, nullptr),
               std::invalid_argument);
}

TEST(CudaDequantizeF16, MatchesTheCpuDequantization) {
  skip_without_device();
  if (IsSkipped()) return;
  constexpr int64_t kRows = 37;  // chunks not a multiple of the thread block
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0,
                          TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K}) {
    ASSERT_TRUE(kernels::cuda::dequantize_to_f16_supports(type));
    const bool plain = type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16;
    const bool k_quant = type == TensorType::Q4_K || type == TensorType::Q6_K;
    const int64_t cols = plain ? 100 : k_quant ? 512 : 96;
    const Weight w = testing::random_weight(type, kRows, cols, 31);
    std::vector<float> expected(static_cast<size_t>(kRows * cols));
    for (int64_t r = 0; r < kRows; ++r)
      kernels::cpu::dequantize_row(type, w.row(r), expected.data() + r * cols, cols);
    DeviceBuffer<std::byte> d_w(std::vector<std::byte>(w.row(0), w.row(0) + w.bytes()));
    DeviceBuffer<uint16_t> d_out(expected.size());
    kernels::cuda::dequantize_to_f16(type, d_w.data(), kRows, cols, as_half(d_out), nullptr);
    const auto got = d_out.download();
    for (size_t i = 0; i < expected.size(); ++i) {
      if (plain) {
        ASSERT_EQ(got[i], kernels::cpu::fp32_to_fp16(expected[i]))
            << kernels::tensor_type_info(type).name << " " << i;
      } else {
        ASSERT_NEAR(kernels::cpu::fp16_to_fp32(got[i]), expected[i], 1e-3 * std::abs(expected[i]) + 1e-6)
            << kernels::tensor_type_info(type).name << " " << i;
      }
    }
  }
}

TEST(CudaDequantizeF16, F32ToF16RoundsAsTheCpu) {
  skip_without_device();
  if (IsSkipped()) return;
  auto x = testing::normal_values(1000, 32, 100.0f);  // not a multiple of the thread block
  for (const float special :
       {0.0f, -0.0f, 1e-8f, 3e-8f, 3e-5f, -6.1e-5f, 65504.0f, 65519.0f, 65520.0f, -1e6f})
    x.push_back(special);  // zeros, subnormals, the largest half, the first value to round to inf
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<uint16_t> d_out(x.size());
  kernels::cuda::f32_to_f16(d_x.data(), as_half(d_out), static_cast<int64_t>(x.size()), nullptr);
  const auto got = d_out.download();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], kernels::cpu::fp32_to_fp16(x[i])) << x[i];
}

}  // namespace
}  // namespace kvshrink
