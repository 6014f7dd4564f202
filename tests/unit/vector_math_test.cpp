// kernels/cpu/vector_math.h and CpuBackend::silu_mul: the vectorised loops (16 lanes, masked tail)
// give the scalar fast_exp's bits at every length, and fast_exp stays within its stated error of
// std::exp.
#include "kernels/cpu/vector_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "support/random_values.h"

namespace kvshrink {
namespace {

using kernels::cpu::exp_shifted_sum;
using kernels::cpu::fast_exp;

constexpr int64_t kLengths[] = {1, 2, 15, 16, 17, 31, 33, 100, 1000};

TEST(VectorMath, ExpShiftedSumGivesTheScalarBitsAtEveryLength) {
  for (const int64_t n : kLengths) {
    std::vector<float> x = testing::normal_values(static_cast<size_t>(n), 7 + static_cast<uint32_t>(n));
    for (auto& v : x) v *= 10.0f;  // some below -87 after the shift, which clamps
    const float shift = 3.5f;
    std::vector<float> expected(x.size());
    double expected_sum = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      expected[i] = fast_exp(x[i] - shift);
      expected_sum += expected[i];
    }
    const float sum = exp_shifted_sum(x.data(), n, shift);
    EXPECT_EQ(x, expected) << "n " << n;
    EXPECT_NEAR(sum, expected_sum, 1e-5 * expected_sum) << "n " << n;
  }
}

TEST(VectorMath, FastExpIsWithinAFewUlpOfStdExp) {
  for (float x = -87.0f; x <= 88.0f; x += 0.37f) {
    const double exact = std::exp(static_cast<double>(x));
    EXPECT_NEAR(fast_exp(x), exact, 4e-7 * exact) << "x " << x;
  }
  EXPECT_EQ(fast_exp(-1000.0f), fast_exp(-87.0f));  // clamped, not garbage
}

TEST(VectorMath, SiluMulMatchesItsFormulaAtEveryLength) {
  kernels::cpu::CpuBackend backend;
  for (const int64_t n : kLengths) {
    std::vector<float> gate = testing::normal_values(static_cast<size_t>(n), 50 + static_cast<uint32_t>(n));
    const std::vector<float> up = testing::normal_values(gate.size(), 90 + static_cast<uint32_t>(n));
    std::vector<float> expected(gate.size());
    for (size_t i = 0; i < gate.size(); ++i) expected[i] = gate[i] / (1.0f + fast_exp(-gate[i])) * up[i];
    backend.silu_mul(gate.data(), up.data(), n);
    for (size_t i = 0; i < gate.size(); ++i) {
      EXPECT_NEAR(gate[i], expected[i], 1e-6f * (1.0f + std::fabs(expected[i]))) << "n " << n << " i " << i;
    }
  }
}

}  // namespace
}  // namespace kvshrink
