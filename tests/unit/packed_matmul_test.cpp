// Matmul over packed weights (the packed small-m GEMM of decode, threaded over output rows, and
// the dequantize-then-SGEMM prefill path) equals the product with the dequantized rows, for every
// packing the loader can keep, on 1 and 2 compute threads.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"

namespace kvshrink::kernels::cpu {
namespace {

constexpr int64_t kRows = 602;  // more than one 512-row dequantization block, not a multiple of 4
constexpr int64_t kCols = 512;  // two K-quant super-blocks, sixteen 32-blocks

Weight random_packed(TensorType type, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(kRows * cols));
  for (auto& v : values) v = normal(rng);
  const int64_t row_bytes = packed_row_bytes(type, cols);
  std::vector<std::byte> packed(static_cast<size_t>(kRows * row_bytes));
  for (int64_t r = 0; r < kRows; ++r) {
    const float* src = values.data() + r * cols;
    std::byte* dst = packed.data() + r * row_bytes;
    switch (type) {
      case TensorType::Q4_0:
        quantize_row_q4_0(src, dst, cols);
        break;
      case TensorType::Q4_1:
        quantize_row_q4_1(src, dst, cols);
        break;
      case TensorType::Q8_0:
        quantize_row_q8_0(src, dst, cols);
        break;
      case TensorType::F16:
      case TensorType::BF16:
        for (int64_t c = 0; c < cols; ++c) {
          uint32_t bits;
          std::memcpy(&bits, &src[c], 4);
          const uint16_t h =
              type == TensorType::F16 ? fp32_to_fp16(src[c]) : static_cast<uint16_t>(bits >> 16);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      default: {  // K-quants: random bytes with a small fp16 scale in place (d is stored per 256)
        std::uniform_int_distribution<int> byte(0, 255);
        for (int64_t i = 0; i < row_bytes; ++i) dst[i] = static_cast<std::byte>(byte(rng));
        const int64_t block_bytes = static_cast<int64_t>(tensor_type_info(type).block_bytes);
        const uint16_t scale = fp32_to_fp16(0.01f);
        for (int64_t b = 0; b < row_bytes / block_bytes; ++b) {
          const int64_t d_offset = type == TensorType::Q6_K ? block_bytes - 2 : 0;  // Q6_K: d last
          std::memcpy(dst + b * block_bytes + d_offset, &scale, 2);
          if (type == TensorType::Q4_K) std::memcpy(dst + b * block_bytes + 2, &scale, 2);  // dmin
        }
      }
    }
  }
  return Weight::from_packed(type, kRows, cols, std::move(packed));
}

// y[m x rows] with the rows dequantized first, in double.
std::vector<double> reference(const Weight& w, const std::vector<float>& x, int64_t m) {
  const int64_t cols = w.cols();
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<double> y(static_cast<size_t>(m * kRows));
  for (int64_t r = 0; r < kRows; ++r) {
    dequantize_row(w.dtype(), w.row(r), row.data(), cols);
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += static_cast<double>(row[c]) * x[i * cols + c];
      y[i * kRows + r] = sum;
    }
  }
  return y;
}

// backend.matmul of m random tokens equals reference() on 1 and 2 compute threads.
void expect_matmul_equals_reference(const Weight& w, std::mt19937& rng) {
  CpuBackend backend;
  std::normal_distribution<float> normal;
  const int threads = openblas_get_num_threads();
  for (const auto& [m, compute_threads] :
       {std::pair{1, 1}, {1, 2}, {2, 2}, {3, 2}, {8, 1}, {8, 2}, {17, 2}, {33, 2}, {64, 2}, {65, 2}}) {
    openblas_set_num_threads(compute_threads);
    std::vector<float> x(static_cast<size_t>(m * w.cols()));
    for (auto& v : x) v = normal(rng);
    std::vector<float> y(static_cast<size_t>(m * kRows));
    backend.matmul(w, x.data(), y.data(), m);
    const auto expected = reference(w, x, m);
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < y.size(); ++i) {
      worst = std::max(worst, std::abs(y[i] - expected[i]));
      scale = std::max(scale, std::abs(expected[i]));
    }
    EXPECT_LE(worst, 1e-5 * scale + 1e-5) << tensor_type_info(w.dtype()).name << " cols=" << w.cols()
                                          << " m=" << m << " threads=" << compute_threads;
  }
  openblas_set_num_threads(threads);
}

class PackedMatmulTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(PackedMatmulTest, EqualsProductWithDequantizedRows) {
  std::mt19937 rng(11);
  expect_matmul_equals_reference(random_packed(GetParam(), kCols, rng), rng);
}

// Rows of 16-bit floats need not be whole 32-column blocks.
TEST(PackedMatmulTest, F16RowsWithAPartialBlock) {
  std::mt19937 rng(12);
  expect_matmul_equals_reference(random_packed(TensorType::F16, 72, rng), rng);
}

INSTANTIATE_TEST_SUITE_P(Types, PackedMatmulTest,
                         ::testing::Values(TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_0,
                                           TensorType::F16, TensorType::BF16, TensorType::Q4_K,
                                           TensorType::Q6_K),
                         [](const auto& info) { return std::string(tensor_type_info(info.param).name); });

}  // namespace
}  // namespace kvshrink::kernels::cpu
