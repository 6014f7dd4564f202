// Embedding rows dequantized on the device (kernels/cuda/embedding_rows.h) against the CPU backend
// for F32, F16, Q4_1 and Q8_0 tables. F32 and F16 exact; Q4_1 / Q8_0 within 1e-6 relative (d * q + m
// with or without FMA contraction). Refusals run without a device; the rest is skipped without one.
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

constexpr int64_t kVocab = 50, kCols = 96;

Weight random_table(TensorType type) {
  return testing::random_weight(type, kVocab, kCols, 7);
}

TEST(CudaEmbeddingRows, RefusesWhatItDoesNotTake) {
  EXPECT_THROW(kernels::cuda::embedding_rows(TensorType::Q4_0, nullptr, 64, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kernels::cuda::embedding_rows(TensorType::Q8_0, nullptr, 40, nullptr, 1, nullptr, nullptr),
               std::invalid_argument);
}

TEST(CudaEmbeddingRows, MatchTheCpuBackend) {
  std::string why;
  if (kernels::cuda::cuda_devices(&why).empty()) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  const std::vector<int32_t> tokens{0, 49, 7, 7, 23};
  kernels::cpu::CpuBackend cpu;
  for (const auto type : {TensorType::F32, TensorType::F16, TensorType::Q4_1, TensorType::Q8_0}) {
    const Weight table = random_table(type);
    std::vector<float> expected(tokens.size() * kCols);
    cpu.embedding_rows(table, tokens.data(), static_cast<int64_t>(tokens.size()), expected.data());
    DeviceBuffer<std::byte> d_table(std::vector<std::byte>(table.row(0), table.row(0) + table.bytes()));
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<float> d_out(expected.size());
    kernels::cuda::embedding_rows(type, d_table.data(), kCols, d_tokens.data(),
                                  static_cast<int64_t>(tokens.size()), d_out.data(), nullptr);
    const auto got = d_out.download();
    const bool exact = type == TensorType::F32 || type == TensorType::F16;
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
