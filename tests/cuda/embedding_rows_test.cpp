// Embedding rows dequantized on the device (kernels/cuda/embedding_rows.h) against the CPU backend
// for F32, F16, BF16, Q4_0, Q4_1, Q8_0 (96 columns), Q4_K and Q6_K (512 columns) tables. F32, F16
// and BF16 exact; the blocked packings within 1e-6 relative (Q4_1's d * q + m and Q4_K's
// d sc q - dmin m with or without FMA contraction). Refusals run without a device; the rest is
// skipped without one.
#include "kernels/cuda/embedding_rows.h"

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
#include "support/random_weight.h"

namespace kvshrink {
namespace {

using kernels::TensorType;
using kernels::Weight;
using kernels::cuda::DeviceBuffer;

constexpr int64_t kVocab = 50;

bool is_k_quant(TensorType type) {
  return type == TensorType::Q4_K || type == TensorType::Q6_K;
}

int64_t table_cols(TensorType type) {
  return is_k_quant(type) ? 512 : 96;
}

Weight random_table(TensorType type) {
  return testing::random_weight(type, kVocab, table_cols(type), 7);
}

TEST(CudaEmbeddingRows, RefusesWhatItDoesNotTake) {
  const auto unknown = static_cast<TensorType>(6);  // Q5_0's id: not a kvshrink type
  EXPECT_FALSE(kernels::cuda::embedding_rows_supports(unknown));
  EXPECT_THROW(kernels::cuda::embedding_rows(unknown, nullptr, 64, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::embedding_rows(TensorType::Q8_0, nullptr, 40, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::embedding_rows(TensorType::Q4_K, nullptr, 96, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::embedding_rows(TensorType::Q6_K, nullptr, 288, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
}

TEST(CudaEmbeddingRows, MatchTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  const std::vector<int32_t> tokens{0, 49, 7, 7, 23};
  kernels::cpu::CpuBackend cpu;
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0,
                          TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K}) {
    ASSERT_TRUE(kernels::cuda::embedding_rows_supports(type));
    const Weight table = random_table(type);
    const int64_t cols = table_cols(type);
    std::vector<float> expected(tokens.size() * cols);
    cpu.embedding_rows(table, tokens.data(), static_cast<int64_t>(tokens.size()), expected.data());
    DeviceBuffer<std::byte> d_table(std::vector<std::byte>(table.row(0), table.row(0) + table.bytes()));
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<float> d_out(expected.size());
    kernels::cuda::embedding_rows(type, d_table.data(), cols, d_tokens.data(),
                                  static_cast<int64_t>(tokens.size()), d_out.data(), nullptr);
    const auto got = d_out.download();
    const bool exact = type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16;
    for (size_t i = 0; i < expected.size(); ++i) {
      if (exact) {
        ASSERT_EQ(got[i], expected[i]) << kernels::tensor_type_info(type).name << " " << i;
      } else {
        ASSERT_NEAR(got[i], expected[i], 1e-6 * (1 + std::abs(expected[i])))
            << kernels::tensor_type_info(type).name;
      }
    }
  }
}

}  // namespace
}  // namespace kvshrink
