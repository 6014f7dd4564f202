// Opens the real model (SmolLM2-135M-Instruct, Q4_1) and checks its structure and every tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "kernels/cpu/dequantize.h"
#include "support/test_paths.h"

namespace kvshrink::engine {
namespace {

using kernels::TensorType;

// Opens the model once for all tests; each test fails (never skips) when it is missing.
class GgufModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::filesystem::path path = testing::model_path();
    ASSERT_TRUE(std::filesystem::exists(path))
        << "model file " << path << " is missing: set KVSHRINK_MODEL or run scripts/setup.sh";
    if (!file_) file_ = std::make_unique<GgufFile>(GgufFile::open(path));
  }
  static void TearDownTestSuite() { file_.reset(); }

  static std::unique_ptr<GgufFile> file_;
};

std::unique_ptr<GgufFile> GgufModelTest::file_;

TEST_F(GgufModelTest, Metadata) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->alignment(), 32u);
  EXPECT_EQ(file_->get_string("general.architecture"), "llama");
  EXPECT_EQ(file_->get_uint("llama.block_count"), 30u);
  EXPECT_EQ(file_->get_uint("llama.embedding_length"), 576u);
  EXPECT_EQ(file_->get_uint("llama.attention.head_count"), 9u);
  EXPECT_EQ(file_->get_uint("llama.attention.head_count_kv"), 3u);
  EXPECT_EQ(file_->get_uint("general.file_type"), 3u);  // mostly Q4_1
  EXPECT_FLOAT_EQ(static_cast<float>(file_->get_float("llama.rope.freq_base")), 100000.0f);
  EXPECT_EQ(file_->get_string("tokenizer.ggml.model"), "gpt2");
  const std::vector<std::string> tokens = file_->get_string_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens.size(), 49152u);
  EXPECT_EQ(file_->get_int_array("tokenizer.ggml.token_type").size(), 49152u);
}

TEST_F(GgufModelTest, TensorLayout) {
  EXPECT_EQ(file_->tensors().size(), 272u);

  const GgufTensorInfo& q = file_->get_tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.dims, (std::vector<uint64_t>{576, 576}));
  EXPECT_EQ(q.type, TensorType::Q4_1);
  EXPECT_EQ(q.n_bytes, 576u / 32u * 20u * 576u);

  const GgufTensorInfo& k = file_->get_tensor("blk.0.attn_k.weight");
  EXPECT_EQ(k.dims, (std::vector<uint64_t>{576, 192}));
  EXPECT_EQ(file_->get_tensor("blk.29.ffn_down.weight").dims, (std::vector<uint64_t>{1536, 576}));

  const GgufTensorInfo& embedding = file_->get_tensor("token_embd.weight");
  EXPECT_EQ(embedding.type, TensorType::Q8_0);
  EXPECT_EQ(embedding.dims, (std::vector<uint64_t>{576, 49152}));
  EXPECT_EQ(file_->find_tensor("output.weight"), nullptr);  // tied to token_embd

  for (const GgufTensorInfo& tensor : file_->tensors()) {
    if (tensor.name.find("_norm.weight") != std::string::npos) {
      EXPECT_EQ(tensor.type, TensorType::F32) << tensor.name;
      EXPECT_EQ(tensor.dims, (std::vector<uint64_t>{576})) << tensor.name;
    }
  }
  EXPECT_EQ(file_->get_tensor("output_norm.weight").type, TensorType::F32);
}

TEST_F(GgufModelTest, EveryTensorDequantizesToFiniteValues) {
  std::vector<float> values;
  for (const GgufTensorInfo& tensor : file_->tensors()) {
    values.resize(tensor.n_elements);
    kernels::cpu::dequantize_row(tensor.type, file_->tensor_data(tensor).data(), values.data(),
                                 static_cast<int64_t>(tensor.n_elements));
    size_t non_finite = 0;
    double sum_of_squares = 0.0;
    for (const float v : values) {
      if (!std::isfinite(v)) ++non_finite;
      sum_of_squares += static_cast<double>(v) * v;
    }
    EXPECT_EQ(non_finite, 0u) << tensor.name;
    EXPECT_GT(sum_of_squares, 0.0) << tensor.name << " is all zeros";
  }
}

}  // namespace
}  // namespace kvshrink::engine
