// GgufWriter -> GgufFile: every value type, arrays, v2 and v3 headers, alignment and tensor data.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quantize.h"

namespace kvshrink::engine {
namespace {

using kernels::TensorType;

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::path(::testing::TempDir()) / ("gguf_roundtrip_" + name + ".gguf");
}

void write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

GgufFile write_and_open(const GgufWriter& writer, const std::string& name) {
  const std::filesystem::path path = temp_path(name);
  writer.write(path);
  return GgufFile::open(path);
}

// One value of every scalar type, a string, and an array of every element type.
std::vector<std::pair<std::string, GgufValue>> all_value_kinds() {
  using T = GgufValueType;
  return {
      {"t.uint8", {T::UINT8, uint8_t{200}}},
      {"t.int8", {T::INT8, int8_t{-100}}},
      {"t.uint16", {T::UINT16, uint16_t{60000}}},
      {"t.int16", {T::INT16, int16_t{-30000}}},
      {"t.uint32", {T::UINT32, uint32_t{4000000000u}}},
      {"t.int32", {T::INT32, int32_t{-2000000000}}},
      {"t.float32", {T::FLOAT32, 1.5e-5f}},
      {"t.bool_true", {T::BOOL, true}},
      {"t.bool_false", {T::BOOL, false}},
      {"t.string", {T::STRING, std::string("héllo wörld")}},
      {"t.empty_string", {T::STRING, std::string()}},
      {"t.uint64", {T::UINT64, uint64_t{18000000000000000000ull}}},
      {"t.int64", {T::INT64, int64_t{-9000000000000000000ll}}},
      {"t.float64", {T::FLOAT64, 3.141592653589793}},
      {"a.uint8", {T::ARRAY, GgufArray{T::UINT8, std::vector<uint8_t>{0, 1, 255}}}},
      {"a.int8", {T::ARRAY, GgufArray{T::INT8, std::vector<int8_t>{-128, 0, 127}}}},
      {"a.uint16", {T::ARRAY, GgufArray{T::UINT16, std::vector<uint16_t>{1, 65535}}}},
      {"a.int16", {T::ARRAY, GgufArray{T::INT16, std::vector<int16_t>{-32768, 32767}}}},
      {"a.uint32", {T::ARRAY, GgufArray{T::UINT32, std::vector<uint32_t>{7, 4294967295u}}}},
      {"a.int32", {T::ARRAY, GgufArray{T::INT32, std::vector<int32_t>{-1, 2, -3}}}},
      {"a.float32", {T::ARRAY, GgufArray{T::FLOAT32, std::vector<float>{0.5f, -2.0f}}}},
      {"a.bool", {T::ARRAY, GgufArray{T::BOOL, std::vector<bool>{true, false, true}}}},
      {"a.string", {T::ARRAY, GgufArray{T::STRING, std::vector<std::string>{"a", "", "Ġ t", "<|im_end|>"}}}},
      {"a.uint64", {T::ARRAY, GgufArray{T::UINT64, std::vector<uint64_t>{0, 1ull << 63}}}},
      {"a.int64", {T::ARRAY, GgufArray{T::INT64, std::vector<int64_t>{-(1ll << 62), 5}}}},
      {"a.float64", {T::ARRAY, GgufArray{T::FLOAT64, std::vector<double>{1e300, -0.25}}}},
      {"a.empty", {T::ARRAY, GgufArray{T::INT32, std::vector<int32_t>{}}}},
  };
}

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter writer;
  const auto values = all_value_kinds();
  for (const auto& [key, value] : values) writer.set(key, value);
  const GgufFile file = write_and_open(writer, "values");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_EQ(file.find("general.alignment"), nullptr);  // default alignment is not written
  ASSERT_EQ(file.metadata().size(), values.size());
  for (const auto& [key, value] : values) {
    const GgufValue* read = file.find(key);
    ASSERT_NE(read, nullptr) << key;
    EXPECT_EQ(*read, value) << key;
  }
  EXPECT_TRUE(file.tensors().empty());
}

TEST(GgufRoundTrip, TypedGetters) {
  GgufWriter writer;
  for (const auto& [key, value] : all_value_kinds()) writer.set(key, value);
  writer.set_uint32("c.u32", 30);
  writer.set_int32("c.i32", -5);
  writer.set_float32("c.f32", 1e-5f);
  writer.set_bool("c.flag", true);
  writer.set_string("c.name", "llama");
  writer.set_string_array("c.tokens", {"<s>", "hello", " world"});
  writer.set_int32_array("c.types", {1, 3, 6});
  writer.set_float32_array("c.scores", {-1.0f, 0.5f});
  const GgufFile file = write_and_open(writer, "getters");

  EXPECT_EQ(file.get_string("c.name"), "llama");
  EXPECT_EQ(file.find_string("c.absent"), std::nullopt);
  EXPECT_EQ(file.get_uint("c.u32"), 30u);
  EXPECT_EQ(file.get_uint("t.uint8"), 200u);
  EXPECT_EQ(file.get_uint("t.uint64"), 18000000000000000000ull);
  EXPECT_EQ(file.find_uint("c.absent"), std::nullopt);
  EXPECT_EQ(file.find_uint("t.uint16"), 60000u);
  EXPECT_FLOAT_EQ(static_cast<float>(file.get_float("c.f32")), 1e-5f);
  EXPECT_DOUBLE_EQ(file.get_float("t.float64"), 3.141592653589793);
  EXPECT_EQ(file.find_float("c.absent"), std::nullopt);
  EXPECT_EQ(file.find_bool("c.flag"), true);
  EXPECT_EQ(file.find_bool("t.bool_false"), false);
  EXPECT_EQ(file.find_bool("c.absent"), std::nullopt);
  EXPECT_EQ(file.get_string_array("c.tokens"), (std::vector<std::string>{"<s>", "hello", " world"}));
  EXPECT_EQ(file.get_int_array("c.types"), (std::vector<int64_t>{1, 3, 6}));
  EXPECT_EQ(file.get_int_array("a.uint16"), (std::vector<int64_t>{1, 65535}));
  EXPECT_EQ(file.get_int_array("a.int8"), (std::vector<int64_t>{-128, 0, 127}));
  EXPECT_TRUE(file.get_int_array("a.empty").empty());

  const auto expect_error = [&](auto&& call, const std::string& substring) {
    try {
      call();
      ADD_FAILURE() << "no GgufError; expected '" << substring << "'";
    } catch (const GgufError& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(file.path().string(), 0), 0u) << message;
      EXPECT_NE(message.find(substring), std::string::npos) << message;
    }
  };
  expect_error([&] { file.get_string("c.missing"); }, "missing key 'c.missing'");
  expect_error([&] { file.get_string("c.u32"); }, "key 'c.u32' has type UINT32, expected STRING");
  expect_error([&] { file.get_uint("c.i32"); }, "key 'c.i32' is negative (-5)");
  expect_error([&] { file.get_uint("c.name"); }, "key 'c.name' has type STRING");
  expect_error([&] { file.get_uint("c.flag"); }, "key 'c.flag' has type BOOL");
  expect_error([&] { file.get_float("c.u32"); }, "expected FLOAT32 or FLOAT64");
  expect_error([&] { file.find_bool("c.u32"); }, "expected BOOL");
  expect_error([&] { file.get_string_array("c.types"); },
               "has type ARRAY of INT32, expected ARRAY of STRING");
  expect_error([&] { file.get_int_array("c.scores"); }, "has type ARRAY of FLOAT32");
  expect_error([&] { file.get_int_array("a.uint64"); }, "beyond the int64 range");
  expect_error([&] { file.get_tensor("nope"); }, "missing tensor 'nope'");
}

TEST(GgufRoundTrip, SetReplacesAnExistingKey) {
  GgufWriter writer;
  writer.set_uint32("k.a", 1);
  writer.set_string("k.b", "x");
  writer.set_string("k.a", "now a string");
  const GgufFile file = write_and_open(writer, "replace");
  EXPECT_EQ(file.metadata().size(), 2u);
  EXPECT_EQ(file.get_string("k.a"), "now a string");
}

TEST(GgufRoundTrip, VersionTwoHeader) {
  GgufWriter writer;
  writer.set_string("general.architecture", "llama");
  const std::vector<float> weights{1, 2, 3, 4};
  writer.add_f32_tensor("w", {4}, weights);
  std::vector<std::byte> bytes = writer.to_bytes();
  ASSERT_EQ(bytes[4], std::byte{3});
  bytes[4] = std::byte{2};  // v2 has the same layout
  const std::filesystem::path path = temp_path("v2");
  write_bytes(path, bytes);
  const GgufFile file = GgufFile::open(path);
  EXPECT_EQ(file.version(), 2u);
  EXPECT_EQ(file.get_string("general.architecture"), "llama");
  const auto data = file.tensor_data(file.get_tensor("w"));
  ASSERT_EQ(data.size(), 16u);
  EXPECT_EQ(std::memcmp(data.data(), weights.data(), 16), 0);
}

// Tensors of several types; every offset aligned, data identical after the round trip.
void check_tensor_round_trip(uint32_t alignment) {
  GgufWriter writer(alignment);
  writer.set_string("general.architecture", "llama");

  const std::vector<float> norm{0.5f, 1.0f, -1.5f};  // 12 bytes: forces padding
  writer.add_f32_tensor("blk.0.attn_norm.weight", {3}, norm);

  std::vector<float> matrix(64 * 3);
  for (size_t i = 0; i < matrix.size(); ++i) matrix[i] = static_cast<float>(i % 17) * 0.25f - 2.0f;
  std::vector<kernels::cpu::BlockQ8_0> q8(matrix.size() / 32);
  kernels::cpu::quantize_row_q8_0(matrix.data(), q8.data(), static_cast<int64_t>(matrix.size()));
  writer.add_tensor("blk.0.attn_q.weight", {64, 3}, TensorType::Q8_0, std::as_bytes(std::span(q8)));

  std::vector<kernels::cpu::BlockQ4_1> q4(matrix.size() / 32);
  kernels::cpu::quantize_row_q4_1(matrix.data(), q4.data(), static_cast<int64_t>(matrix.size()));
  writer.add_tensor("blk.0.ffn_up.weight", {32, 2, 3}, TensorType::Q4_1, std::as_bytes(std::span(q4)));

  const std::vector<uint16_t> halves{0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555};
  writer.add_tensor("half", {5, 1, 1, 1}, TensorType::F16, std::as_bytes(std::span(halves)));

  const GgufFile file = write_and_open(writer, "tensors_" + std::to_string(alignment));
  EXPECT_EQ(file.alignment(), alignment);
  if (alignment == 32) {
    EXPECT_EQ(file.find("general.alignment"), nullptr);
  } else {
    EXPECT_EQ(file.get_uint("general.alignment"), alignment);
    EXPECT_EQ(file.find("general.alignment")->type, GgufValueType::UINT32);
  }
  ASSERT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.tensors()[0].name, "blk.0.attn_norm.weight");  // file order kept
  EXPECT_EQ(file.tensors()[3].name, "half");

  const GgufTensorInfo& norm_info = file.get_tensor("blk.0.attn_norm.weight");
  EXPECT_EQ(norm_info.type, TensorType::F32);
  EXPECT_EQ(norm_info.dims, (std::vector<uint64_t>{3}));
  EXPECT_EQ(norm_info.n_bytes, 12u);

  const GgufTensorInfo& q_info = file.get_tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q_info.type, TensorType::Q8_0);
  EXPECT_EQ(q_info.dims, (std::vector<uint64_t>{64, 3}));
  EXPECT_EQ(q_info.n_elements, 192u);
  EXPECT_EQ(q_info.rows(), 3u);
  EXPECT_EQ(q_info.n_bytes, 6u * 34u);

  const GgufTensorInfo& up_info = file.get_tensor("blk.0.ffn_up.weight");
  EXPECT_EQ(up_info.rows(), 6u);
  EXPECT_EQ(up_info.n_bytes, 6u * 20u);

  const GgufTensorInfo& half_info = file.get_tensor("half");
  EXPECT_EQ(half_info.dims, (std::vector<uint64_t>{5, 1, 1, 1}));

  uint64_t expected_offset = 0;
  for (const GgufTensorInfo& tensor : file.tensors()) {
    EXPECT_EQ(tensor.offset, expected_offset) << tensor.name;  // the running sum llama.cpp expects
    EXPECT_EQ(reinterpret_cast<uintptr_t>(file.tensor_data(tensor).data()) % alignment, 0u) << tensor.name;
    expected_offset += (tensor.n_bytes + alignment - 1) / alignment * alignment;
  }

  const auto same_bytes = [&](const GgufTensorInfo& tensor, const void* expected) {
    const auto data = file.tensor_data(tensor);
    return data.size() == tensor.n_bytes && std::memcmp(data.data(), expected, data.size()) == 0;
  };
  EXPECT_TRUE(same_bytes(norm_info, norm.data()));
  EXPECT_TRUE(same_bytes(q_info, q8.data()));
  EXPECT_TRUE(same_bytes(up_info, q4.data()));
  EXPECT_TRUE(same_bytes(half_info, halves.data()));

  std::vector<float> q_values(192);
  kernels::cpu::dequantize_row(TensorType::Q8_0, file.tensor_data(q_info).data(), q_values.data(), 192);
  for (size_t i = 0; i < q_values.size(); ++i) EXPECT_NEAR(q_values[i], matrix[i], 0.02f) << i;
}

TEST(GgufRoundTrip, TensorsDefaultAlignment) {
  check_tensor_round_trip(32);
}
TEST(GgufRoundTrip, TensorsAlignment8) {
  check_tensor_round_trip(8);
}
TEST(GgufRoundTrip, TensorsAlignment64) {
  check_tensor_round_trip(64);
}
TEST(GgufRoundTrip, TensorsAlignment4096) {
  check_tensor_round_trip(4096);
}

TEST(GgufRoundTrip, EmptyFile) {
  const GgufWriter writer;
  const std::vector<std::byte> bytes = writer.to_bytes();
  EXPECT_EQ(bytes.size(), 32u);  // 24-byte header padded to the alignment
  const GgufFile file = write_and_open(writer, "empty");
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_TRUE(file.tensors().empty());
}

TEST(GgufRoundTrip, MovedFileKeepsItsMapping) {
  GgufWriter writer;
  const std::vector<float> weights{9, 8, 7, 6, 5};
  writer.add_f32_tensor("w", {5}, weights);
  GgufFile first = write_and_open(writer, "moved");
  GgufFile second = std::move(first);
  const auto data = second.tensor_data(second.get_tensor("w"));
  EXPECT_EQ(std::memcmp(data.data(), weights.data(), 20), 0);
}

TEST(GgufWriterTest, RejectsInvalidInput) {
  EXPECT_THROW(GgufWriter(48), std::invalid_argument);  // not a power of two
  EXPECT_THROW(GgufWriter(4), std::invalid_argument);   // not a multiple of 8
  GgufWriter writer;
  const std::vector<float> four(4, 1.0f);
  EXPECT_THROW(writer.add_f32_tensor("w", {5}, four), std::invalid_argument);  // size mismatch
  EXPECT_THROW(writer.add_f32_tensor("w", {}, four), std::invalid_argument);
  EXPECT_THROW(writer.add_f32_tensor("w", {4, 1, 1, 1, 1}, four), std::invalid_argument);
  EXPECT_THROW(writer.add_f32_tensor("w", {4, 0}, four), std::invalid_argument);
  EXPECT_THROW(writer.add_f32_tensor(std::string(64, 'x'), {4}, four), std::invalid_argument);
  writer.add_f32_tensor(std::string(63, 'x'), {4}, four);
  writer.add_f32_tensor("w", {4}, four);
  EXPECT_THROW(writer.add_f32_tensor("w", {4}, four), std::invalid_argument);  // duplicate
  const std::vector<std::byte> bytes(34);
  EXPECT_THROW(writer.add_tensor("q", {16}, TensorType::Q8_0, bytes),
               std::invalid_argument);  // partial block
  EXPECT_THROW(writer.set("general.alignment", {GgufValueType::UINT32, uint32_t{64}}), std::invalid_argument);
  EXPECT_THROW(writer.set("k", {GgufValueType::UINT32, int32_t{1}}), std::invalid_argument);  // tag mismatch
  EXPECT_THROW(writer.set("k", {GgufValueType::ARRAY, GgufArray{GgufValueType::INT8, std::vector<float>{}}}),
               std::invalid_argument);
  EXPECT_THROW(
      writer.set("k", {GgufValueType::ARRAY, GgufArray{GgufValueType::ARRAY, std::vector<uint8_t>{}}}),
      std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink::engine
