// The integer-dot matmul of q8 activations (kernels/cpu/packed_gemm_q8.h, q8_activations.h):
// the VNNI kernel and the portable loop equal the same quantized math in double to f32 rounding,
// stay within the activations' rounding bound of the f32 product, and CpuBackend with q8
// activations gives every row the result it gets alone (to f32 rounding from kQ8WideMinRows
// rows on), whatever the row count.
#include <cblas.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/packed_gemm_q8.h"
#include "kernels/cpu/packed_gemm_q8_wide.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quantize.h"
#include "support/random_values.h"
#include "support/random_weight.h"

namespace kvshrink::kernels::cpu {
namespace {

constexpr int64_t kRows = 37;  // not a multiple of the 4-row tile

using testing::random_weight;

// Block b of row r as (d, m, q[32]) for Q4_1 / Q8_0.
struct WeightBlock {
  double d = 0.0, m = 0.0;
  int q[32] = {};
};
WeightBlock weight_block(const Weight& w, int64_t r, int64_t b) {
  WeightBlock out;
  if (w.dtype() == TensorType::Q4_1) {
    const auto& block = reinterpret_cast<const BlockQ4_1*>(w.row(r))[b];
    out.d = fp16_to_fp32(block.d);
    out.m = fp16_to_fp32(block.m);
    for (int j = 0; j < 16; ++j) {
      out.q[j] = block.qs[j] & 0xF;
      out.q[j + 16] = block.qs[j] >> 4;
    }
  } else {
    const auto& block = reinterpret_cast<const BlockQ8_0*>(w.row(r))[b];
    out.d = fp16_to_fp32(block.d);
    for (int j = 0; j < 32; ++j) out.q[j] = block.qs[j];
  }
  return out;
}

// The quantized math in double: sum_b d_w d_a sum_j q_w q_a + m_w s_a; also, in `magnitude`, the
// sum of the terms' absolute values (the scale of the f32 rounding).
std::vector<double> reference(const Weight& w, const Q8Activations& a, std::vector<double>& magnitude) {
  std::vector<double> y(static_cast<size_t>(a.m * w.rows()));
  magnitude.assign(y.size(), 0.0);
  for (int64_t r = 0; r < w.rows(); ++r) {
    for (int64_t i = 0; i < a.m; ++i) {
      double sum = 0.0, size = 0.0;
      for (int64_t b = 0; b < a.blocks(); ++b) {
        const auto wb = weight_block(w, r, b);
        int64_t dot = 0;
        for (int j = 0; j < 32; ++j) dot += int64_t{wb.q[j]} * a.q[i * a.cols + b * 32 + j];
        const double product = wb.d * a.d[i * a.blocks() + b] * static_cast<double>(dot);
        const double min_term = wb.m * a.s[i * a.blocks() + b];
        sum += product + min_term;
        size += std::abs(product) + std::abs(min_term);
      }
      y[i * w.rows() + r] = sum;
      magnitude[i * w.rows() + r] = size;
    }
  }
  return y;
}

struct Shape {
  TensorType type;
  int64_t cols;  // 576: 18 blocks; 544: 17, an odd count ends in a half group
  int64_t m;
};

class Q8MatmulTest : public ::testing::TestWithParam<Shape> {};

TEST_P(Q8MatmulTest, KernelsEqualTheQuantizedMathInDouble) {
  const auto [type, cols, m] = GetParam();
  const Weight w = random_weight(type, kRows, cols, 21);
  const auto x = testing::normal_values(static_cast<size_t>(m * cols), 22);
  Q8Activations a;
  quantize_activations(x.data(), m, cols, a);
  std::vector<double> magnitude;
  const auto expected = reference(w, a, magnitude);
  std::vector<float> fast(expected.size()), portable(expected.size());
  packed_gemm_q8(w, a, fast.data());
  packed_gemm_q8_portable(w, a, portable.data());
  for (size_t i = 0; i < expected.size(); ++i) {
    // f32 sums of ~cols/16 terms: a few ulps of the magnitude
    const double tolerance = 1e-6 * magnitude[i];
    ASSERT_NEAR(fast[i], expected[i], tolerance) << "element " << i;
    ASSERT_NEAR(portable[i], expected[i], tolerance) << "element " << i;
  }
}

// Bound on one activation's rounding, in units of its block's d: half a step, plus q's share of d
// rounded to fp16 (|q| <= 127, relative error <= 2^-11).
constexpr double kRoundingSteps = 0.5 + 127.0 / 2048;

// |q8 - f32| <= sum_j |w_j| |x_j - q_j d| + (Q4_1) sum_b |m_b| |s_b - d sum_j q_j|, from the bounds
// above (s rounded to fp16), plus f32 rounding.
TEST_P(Q8MatmulTest, WithinTheActivationRoundingOfTheF32Product) {
  const auto [type, cols, m] = GetParam();
  const Weight w = random_weight(type, kRows, cols, 23);
  const auto x = testing::normal_values(static_cast<size_t>(m * cols), 24);
  Q8Activations a;
  quantize_activations(x.data(), m, cols, a);
  std::vector<float> q8(static_cast<size_t>(m * kRows)), f32(q8.size());
  packed_gemm_q8(w, a, q8.data());
  CpuBackend exact;
  exact.matmul(w, x.data(), f32.data(), m);
  std::vector<float> row(static_cast<size_t>(cols));
  double worst_relative = 0.0;
  for (int64_t r = 0; r < kRows; ++r) {
    dequantize_row(type, w.row(r), row.data(), cols);
    for (int64_t i = 0; i < m; ++i) {
      double bound = 0.0, size = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        bound += std::abs(row[c]) * a.d[i * a.blocks() + c / 32] * kRoundingSteps;
        size += std::abs(row[c] * x[i * cols + c]);
      }
      for (int64_t b = 0; b < a.blocks(); ++b) {
        bound += std::abs(weight_block(w, r, b).m * a.s[i * a.blocks() + b]) / 1024;
      }
      const double error = std::abs(q8[i * kRows + r] - f32[i * kRows + r]);
      EXPECT_LE(error, bound + 1e-5 * size) << "row " << r << " token " << i;
      worst_relative = std::max(worst_relative, error / size);
    }
  }
  // the bound is loose (errors of opposite signs cancel): the typical error is far below it
  EXPECT_LT(worst_relative, 0.01);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Q8MatmulTest,
                         ::testing::Values(Shape{TensorType::Q4_1, 576, 1}, Shape{TensorType::Q4_1, 576, 2},
                                           Shape{TensorType::Q4_1, 576, 7}, Shape{TensorType::Q4_1, 544, 1},
                                           Shape{TensorType::Q4_1, 544, 5}, Shape{TensorType::Q8_0, 576, 1},
                                           Shape{TensorType::Q8_0, 576, 4}, Shape{TensorType::Q8_0, 544, 1},
                                           Shape{TensorType::Q8_0, 544, 3},
                                           // from kQ8WideMinRows rows on: the wide kernel, one
                                           // register of rows, a partial one, and two
                                           Shape{TensorType::Q4_1, 576, 16}, Shape{TensorType::Q4_1, 544, 13},
                                           Shape{TensorType::Q4_1, 576, 33}, Shape{TensorType::Q8_0, 576, 12},
                                           Shape{TensorType::Q8_0, 544, 40}),
                         [](const auto& info) {
                           return std::string(tensor_type_info(info.param.type).name) + "_cols" +
                                  std::to_string(info.param.cols) + "_m" + std::to_string(info.param.m);
                         });

TEST(Q8Activations, BlocksRoundToTheirScale) {
  auto x = testing::normal_values(96, 25);
  for (int j = 64; j < 96; ++j) x[j] = 0.0f;  // an all-zero block
  Q8Activations a;
  quantize_activations(x.data(), 1, 96, a);
  for (int64_t b = 0; b < 3; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(x[b * 32 + j]));
    const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
    EXPECT_EQ(a.d[b], fp16_to_fp32(fp32_to_fp16(amax / 127.0f)));
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int8_t q = a.q[b * 32 + j];
      EXPECT_EQ(q, static_cast<int8_t>(std::nearbyint(x[b * 32 + j] * inverse)));  // the SIMD path too
      EXPECT_LE(std::abs(q), 127);
      EXPECT_LE(std::abs(x[b * 32 + j] - q * a.d[b]), a.d[b] * kRoundingSteps);
      sum += q;
    }
    EXPECT_EQ(a.sum[b], sum);
    EXPECT_NEAR(a.s[b], a.d[b] * sum, std::abs(a.d[b] * sum) / 512);  // both fp16-rounded
  }
  EXPECT_EQ(a.d[2], 0.0f);
  EXPECT_THROW(quantize_activations(x.data(), 1, 40, a), std::invalid_argument);
}

// Many rows are quantized on the compute threads, in tasks of rows: each row as it is alone.
TEST(Q8Activations, ManyRowsQuantizeAsEachRowAlone) {
  const int threads = openblas_get_num_threads();
  constexpr int64_t kCols = 96;
  for (const int compute_threads : {1, 2}) {
    openblas_set_num_threads(compute_threads);
    for (const int64_t m : {15, 16, 40, 300}) {
      const auto x = testing::normal_values(static_cast<size_t>(m * kCols), 28);
      Q8Activations together, alone;
      quantize_activations(x.data(), m, kCols, together);
      for (int64_t i = 0; i < m; ++i) {
        quantize_activations(x.data() + i * kCols, 1, kCols, alone);
        for (int64_t j = 0; j < kCols; ++j) ASSERT_EQ(together.q[i * kCols + j], alone.q[j]) << m << " " << i;
        for (int64_t b = 0; b < 3; ++b) {
          ASSERT_EQ(together.d[i * 3 + b], alone.d[b]);
          ASSERT_EQ(together.s[i * 3 + b], alone.s[b]);
          ASSERT_EQ(together.sum[i * 3 + b], alone.sum[b]);
        }
      }
    }
  }
  openblas_set_num_threads(threads);
}

// A row's result does not depend on the rows it is multiplied with (decode rows sharing a step
// with a prefill chunk), on 1 and 2 compute threads, for the integer kernels and for another
// packing (Q4_0: the f32 kernels on the quantized values). Below kQ8WideMinRows rows it is the
// same bits as alone; from there on the wide kernel sums the same exact block products in
// another f32 order (equal bits among its own calls, f32 rounding from the tiles').
TEST(Q8Backend, EveryRowEqualsItselfAlone) {
  const int threads = openblas_get_num_threads();
  CpuBackend backend(MatmulActivations::kQ8);
  EXPECT_EQ(backend.name(), "cpu (q8 activations)");
  for (const auto type : {TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_0}) {
    const Weight w = random_weight(type, kRows, 576, 26);
    for (const int compute_threads : {1, 2}) {
      openblas_set_num_threads(compute_threads);
      for (const int64_t m : {2, 3, 64, 100}) {
        const auto x = testing::normal_values(static_cast<size_t>(m * 576), 27);
        std::vector<float> together(static_cast<size_t>(m * kRows)), alone(kRows);
        backend.matmul(w, x.data(), together.data(), m);
        const bool integer_kernel = type != TensorType::Q4_0;
        const bool wide = integer_kernel && m >= kQ8WideMinRows && packed_gemm_q8_wide_available();
        for (int64_t i = 0; i < m; i += 1 + m / 8) {
          backend.matmul(w, x.data() + i * 576, alone.data(), 1);
          if (wide) {  // the row among the fewest rows the wide kernel takes: the same bits
            std::vector<float> rows(static_cast<size_t>(kQ8WideMinRows * 576));
            std::copy_n(x.begin() + i * 576, 576, rows.begin());
            std::vector<float> y(static_cast<size_t>(kQ8WideMinRows * kRows));
            backend.matmul(w, rows.data(), y.data(), kQ8WideMinRows);
            for (int64_t r = 0; r < kRows; ++r) ASSERT_EQ(together[i * kRows + r], y[r]) << "m=" << m;
          }
          for (int64_t r = 0; r < kRows; ++r) {
            if ((integer_kernel && !wide) || (!integer_kernel && m <= 64)) {  // Q4_0 past 64: SGEMM
              ASSERT_EQ(together[i * kRows + r], alone[r])
                  << tensor_type_info(type).name << " m=" << m << " row " << i << " out " << r;
            } else {
              ASSERT_NEAR(together[i * kRows + r], alone[r], 1e-4 * (1 + std::abs(alone[r])));
            }
          }
        }
      }
    }
  }
  openblas_set_num_threads(threads);
}

}  // namespace
}  // namespace kvshrink::kernels::cpu
