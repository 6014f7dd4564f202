// The device decode matmul (kernels/cuda/packed_gemv.h) against the CPU backend's f32 matmul on the
// same packed weights, for every packing it takes (F32, F16, BF16, Q4_0, Q4_1, Q8_0 at 576 and 544
// columns; Q4_K, Q6_K at 512 and 768). Tolerance per output: 1e-5 of the sum of |x_k w_k| (both sum
// the same f32 products in different orders) plus 1e-6. The refusals run without a device; the rest
// is skipped without one.
#include "kernels/cuda/packed_gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
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

using testing::random_weight;

constexpr auto kUnknownType = static_cast<TensorType>(6);  // Q5_0's id: not a kvshrink type

TEST(CudaPackedGemv, TakesEveryGgufPacking) {
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0,
                          TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K}) {
    EXPECT_TRUE(kernels::cuda::packed_gemv_supports(type)) << kernels::tensor_type_info(type).name;
  }
  EXPECT_FALSE(kernels::cuda::packed_gemv_supports(kUnknownType));
}

TEST(CudaPackedGemv, RefusesWhatItDoesNotTake) {
  const float* none = nullptr;
  EXPECT_THROW(kernels::cuda::packed_gemv(kUnknownType, nullptr, 4, 64, none, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::packed_gemv(TensorType::Q4_1, nullptr, 4, 64, none, 0, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::packed_gemv(TensorType::Q4_1, nullptr, 4, 64, none,
                                          kernels::cuda::kGemvMaxRows + 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::packed_gemv(TensorType::Q8_0, nullptr, 4, 40, none, 1, nullptr, nullptr),
               std::invalid_argument);
  // K-quants take whole 256-element super-blocks only
  EXPECT_THROW(kernels::cuda::packed_gemv(TensorType::Q4_K, nullptr, 4, 288, none, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::packed_gemv(TensorType::Q6_K, nullptr, 4, 128, none, 1, nullptr, nullptr),
               std::invalid_argument);
}

TEST(CudaPackedGemv, MatchesTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  constexpr int64_t kRows = 37;  // not a multiple of the warps per thread block
  kernels::cpu::CpuBackend cpu;
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0,
                          TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K}) {
    const bool k_quant = type == TensorType::Q4_K || type == TensorType::Q6_K;
    for (const int64_t cols : k_quant ? std::vector<int64_t>{512, 768} : std::vector<int64_t>{576, 544}) {
      const Weight w = random_weight(type, kRows, cols, 11);
      std::vector<float> dequantized(static_cast<size_t>(kRows * cols));
      for (int64_t r = 0; r < kRows; ++r)
        kernels::cpu::dequantize_row(type, w.row(r), dequantized.data() + r * cols, cols);
      std::vector<std::byte> bytes(w.row(0), w.row(0) + w.bytes());
      DeviceBuffer<std::byte> d_w(bytes);
      for (const int64_t m : {1, 3, 8}) {
        const auto x = testing::normal_values(static_cast<size_t>(m * cols), 12);
        std::vector<float> expected(static_cast<size_t>(m * kRows));
        cpu.matmul(w, x.data(), expected.data(), m);
        DeviceBuffer<float> d_x(x), d_y(expected.size());
        kernels::cuda::packed_gemv(type, d_w.data(), kRows, cols, d_x.data(), m, d_y.data(), nullptr);
        const auto got = d_y.download();
        for (int64_t t = 0; t < m; ++t) {
          for (int64_t r = 0; r < kRows; ++r) {
            double magnitude = 0.0;
            for (int64_t k = 0; k < cols; ++k)
              magnitude += std::abs(x[t * cols + k] * dequantized[r * cols + k]);
            ASSERT_NEAR(got[t * kRows + r], expected[t * kRows + r], 1e-5 * magnitude + 1e-6)
                << kernels::tensor_type_info(type).name << " cols " << cols << " m " << m << " row " << r;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvshrink
