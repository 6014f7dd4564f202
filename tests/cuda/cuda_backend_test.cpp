// The CUDA backend (kernels/cuda/cuda_backend.h) against the CPU backend on the same inputs. Its
// matmul: decode rows (m <= 8) in the f32 GEMV, within 1e-5 of the sum of |x_k w_k| plus 1e-6 per
// output (the same f32 products summed in another order); more rows through f16 cuBLAS, within
// 2e-3 of that sum plus 1e-5 (x and the dequantized w each rounded to f16: 2^-11 relative, twice);
// F32 weights on cublasSgemm within 1e-5. The factory's refusals run without a device; the rest is
// skipped without one.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/packed_gemv.h"
#include "kernels/devices.h"
#include "support/random_values.h"
#include "support/random_weight.h"

namespace kvshrink {
namespace {

using kernels::TensorType;
using kernels::Weight;

bool have_device(std::string& why) {
  return !kernels::cuda::cuda_devices(&why).empty();
}

TEST(CudaBackend, FactoryRefusesQ8ActivationsAndAMissingDevice) {
  kernels::BackendOptions options;
  options.device = "cuda";
  options.matmul_activations = kernels::MatmulActivations::kQ8;
  EXPECT_THROW(kernels::make_backend(options), std::invalid_argument);
  std::string why;
  if (have_device(why)) return;
  EXPECT_EQ(kernels::default_device(), "cpu");
  options.matmul_activations = kernels::MatmulActivations::kF32;
  try {
    kernels::make_backend(options);
    FAIL() << "no exception without a device";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

// |y - y_cpu| <= relative * sum_k |x_k w_k| + absolute, output by output.
void expect_matmul_close(const Weight& w, const std::vector<float>& x, int64_t m, const std::vector<float>& y,
                         const std::vector<float>& expected, double relative, double absolute) {
  const int64_t cols = w.cols();
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < w.rows(); ++r) {
    if (w.dtype() == TensorType::F32) {
      std::copy_n(w.f32() + r * cols, cols, row.data());
    } else {
      kernels::cpu::dequantize_row(w.dtype(), w.row(r), row.data(), cols);
    }
    for (int64_t t = 0; t < m; ++t) {
      double magnitude = 0.0;
      for (int64_t k = 0; k < cols; ++k) magnitude += std::fabs(double(x[t * cols + k]) * row[k]);
      const auto at = static_cast<size_t>(t * w.rows() + r);
      ASSERT_NEAR(y[at], expected[at], relative * magnitude + absolute)
          << "type " << static_cast<int>(w.dtype()) << " m " << m << " row " << r;
    }
  }
}

TEST(CudaBackend, MatmulMatchesTheCpuBackend) {
  std::string why;
  if (!have_device(why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  kernels::cuda::CudaBackend cuda(0);
  kernels::cpu::CpuBackend cpu;
  constexpr int64_t kRows = 70, kCols = 512;
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::Q4_1, TensorType::Q8_0,
                          TensorType::Q4_K, TensorType::Q6_K}) {
    const Weight w = testing::random_weight(type, kRows, kCols, 21);
    for (const int64_t m : {1, 5, 8, 9, 64}) {
      const auto x = testing::normal_values(static_cast<size_t>(m * kCols), 22);
      std::vector<float> y(static_cast<size_t>(m * kRows)), expected(y.size());
      cuda.matmul(w, x.data(), y.data(), m);
      cpu.matmul(w, x.data(), expected.data(), m);
      const bool f16_gemm = type != TensorType::F32 && m > kernels::cuda::kGemvMaxRows;
      expect_matmul_close(w, x, m, y, expected, f16_gemm ? 2e-3 : 1e-5, f16_gemm ? 1e-5 : 1e-6);
    }
  }
}

}  // namespace
}  // namespace kvshrink
