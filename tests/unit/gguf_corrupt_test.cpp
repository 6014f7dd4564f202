// Corrupted GGUF files: each variant of a valid file must be rejected with a GgufError that names
// the file and says what was wrong; none may crash (this test also runs under ASan + UBSan).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"

namespace kvshrink::engine {
namespace {

using Bytes = std::vector<std::byte>;

// The valid base file:
//   kv 0 general.architecture = "llama"      kv 3 test.tokens = ["a", "bc", "def"]
//   kv 1 test.flag = true                     kv 4 test.ints = [1, 2, 3] (INT32)
//   kv 2 test.count = 7 (UINT32)              kv 5 test.alignment.ab = 32 (UINT32)
//   tensor weight_a F32  {8, 2}  offset 0   (64 bytes)
//   tensor weight_b Q8_0 {64, 2} offset 64  (136 bytes, padded to 160)
//   tensor weight_c F32  {4}     offset 224 (16 bytes)
Bytes base_file() {
  GgufWriter writer;
  writer.set_string("general.architecture", "llama");
  writer.set_bool("test.flag", true);
  writer.set_uint32("test.count", 7);
  writer.set_string_array("test.tokens", {"a", "bc", "def"});
  writer.set_int32_array("test.ints", {1, 2, 3});
  writer.set_uint32("test.alignment.ab", 32);  // as long as "general.alignment", to be renamed
  const std::vector<float> a(16, 1.0f);
  writer.add_f32_tensor("weight_a", {8, 2}, a);
  const Bytes b(4 * 34, std::byte{0});
  writer.add_tensor("weight_b", {64, 2}, kernels::TensorType::Q8_0, b);
  const std::vector<float> c(4, 2.0f);
  writer.add_f32_tensor("weight_c", {4}, c);
  return writer.to_bytes();
}

// Position of the first byte of a key or tensor name's characters (its u64 length precedes it).
size_t find_name(const Bytes& bytes, std::string_view name) {
  const auto* begin = reinterpret_cast<const char*>(bytes.data());
  const std::string_view all(begin, bytes.size());
  const size_t position = all.find(name);
  if (position == std::string_view::npos)
    throw std::logic_error("name not in base file: " + std::string(name));
  return position;
}

template <typename T>
void put(Bytes& bytes, size_t position, T value) {
  std::memcpy(bytes.data() + position, &value, sizeof(T));
}

// Offsets of the fields after a key (value type, value) and after a tensor name (in the base file).
size_t value_type_at(const Bytes& bytes, std::string_view key) {
  return find_name(bytes, key) + key.size();
}
size_t value_at(const Bytes& bytes, std::string_view key) {
  return value_type_at(bytes, key) + 4;
}
size_t n_dims_at(const Bytes& bytes, std::string_view tensor) {
  return find_name(bytes, tensor) + tensor.size();
}
size_t dims_at(const Bytes& bytes, std::string_view tensor) {
  return n_dims_at(bytes, tensor) + 4;
}
size_t tensor_type_at(const Bytes& bytes, std::string_view tensor, int n_dims) {
  return dims_at(bytes, tensor) + 8 * n_dims;
}
size_t offset_at(const Bytes& bytes, std::string_view tensor, int n_dims) {
  return tensor_type_at(bytes, tensor, n_dims) + 4;
}

void rename(Bytes& bytes, std::string_view from, std::string_view to) {
  ASSERT_EQ(from.size(), to.size());
  std::memcpy(bytes.data() + find_name(bytes, from), to.data(), to.size());
}

constexpr uint64_t kAbsurdCount = 1ull << 60;

struct CorruptCase {
  std::string name;
  std::function<void(Bytes&)> corrupt;
  std::string expected;  // substring of the error message
};

// Test names and failure messages show the case name, not the struct's bytes.
void PrintTo(const CorruptCase& c, std::ostream* out) {
  *out << c.name;
}

std::vector<CorruptCase> corrupt_cases() {
  return {
      // Truncation in every section.
      {"EmptyFile", [](Bytes& b) { b.clear(); }, "header: unexpected end of file: need 4 bytes at offset 0"},
      {"TruncatedHeader", [](Bytes& b) { b.resize(12); },
       "header: unexpected end of file: need 8 bytes at offset 8"},
      {"TruncatedInsideKey", [](Bytes& b) { b.resize(find_name(b, "test.count") + 3); },
       "kv 2: unexpected end of file"},
      {"TruncatedInsideValue",  // inside "def", the third string of test.tokens (element type, count, 9 + 10
                                // + 8 + 2)
       [](Bytes& b) { b.resize(value_at(b, "test.tokens") + 4 + 8 + 9 + 10 + 8 + 2); },
       "key 'test.tokens': unexpected end of file: need 3 bytes"},
      {"TruncatedInsideTensorInfos", [](Bytes& b) { b.resize(dims_at(b, "weight_c") + 6); },
       "tensor 'weight_c': unexpected end of file: need 8 bytes"},
      {"TruncatedInsideData", [](Bytes& b) { b.resize(b.size() - 20); },
       "tensor 'weight_c': data at offset 224 (16 bytes) extends past the end of the file"},
      // Header.
      {"BadMagic", [](Bytes& b) { b[0] = std::byte{'X'}; }, "bad magic 0x46554758"},
      {"Version1", [](Bytes& b) { put<uint32_t>(b, 4, 1); }, "GGUF version 1 is not supported"},
      {"Version4", [](Bytes& b) { put<uint32_t>(b, 4, 4); }, "unsupported GGUF version 4"},
      {"BigEndian", [](Bytes& b) { put<uint32_t>(b, 4, 0x03000000); }, "big-endian GGUF file"},
      {"AbsurdTensorCount", [](Bytes& b) { put<uint64_t>(b, 8, kAbsurdCount); },
       "tensor_count 1152921504606846976 is impossible"},
      {"AbsurdKvCount", [](Bytes& b) { put<uint64_t>(b, 16, kAbsurdCount); },
       "header: kv_count 1152921504606846976 is impossible"},
      // Metadata.
      {"AbsurdArrayCount", [](Bytes& b) { put<uint64_t>(b, value_at(b, "test.tokens") + 4, kAbsurdCount); },
       "key 'test.tokens': array count 1152921504606846976 is impossible"},
      {"StringLengthPastEnd", [](Bytes& b) { put<uint64_t>(b, find_name(b, "test.count") - 8, 1ull << 40); },
       "kv 2: unexpected end of file: need 1099511627776 bytes"},
      {"ArrayStringLengthPastEnd",
       [](Bytes& b) { put<uint64_t>(b, value_at(b, "test.tokens") + 12, 1ull << 40); },
       "key 'test.tokens': unexpected end of file: need 1099511627776 bytes"},
      {"UnknownValueType", [](Bytes& b) { put<uint32_t>(b, value_type_at(b, "test.count"), 13); },
       "key 'test.count': unknown value type 13"},
      {"UnknownArrayElementType", [](Bytes& b) { put<uint32_t>(b, value_at(b, "test.ints"), 42); },
       "key 'test.ints': unknown array element type 42"},
      {"NestedArray", [](Bytes& b) { put<uint32_t>(b, value_at(b, "test.ints"), 9); },
       "key 'test.ints': nested arrays are not supported"},
      {"DuplicateKey", [](Bytes& b) { rename(b, "test.ints", "test.flag"); },
       "key 'test.flag': duplicate key"},
      {"BoolValue7", [](Bytes& b) { put<uint8_t>(b, value_at(b, "test.flag"), 7); },
       "key 'test.flag': bool value 7 is not 0 or 1"},
      {"AlignmentNotPowerOfTwo",
       [](Bytes& b) {
         put<uint32_t>(b, value_at(b, "test.alignment.ab"), 48);
         rename(b, "test.alignment.ab", "general.alignment");
       },
       "key 'general.alignment': alignment 48 is not a power of two and a multiple of 8"},
      {"AlignmentNotMultipleOf8",
       [](Bytes& b) {
         put<uint32_t>(b, value_at(b, "test.alignment.ab"), 4);
         rename(b, "test.alignment.ab", "general.alignment");
       },
       "alignment 4 is not a power of two and a multiple of 8"},
      {"AlignmentWrongType",
       [](Bytes& b) {
         put<uint32_t>(b, value_type_at(b, "test.alignment.ab"), 5);  // INT32
         rename(b, "test.alignment.ab", "general.alignment");
       },
       "key 'general.alignment': type INT32, expected UINT32"},
      // Tensor infos.
      {"UnknownTensorType", [](Bytes& b) { put<uint32_t>(b, tensor_type_at(b, "weight_a", 2), 99); },
       "tensor 'weight_a': unknown or unsupported tensor type 99"},
      {"MisalignedOffset", [](Bytes& b) { put<uint64_t>(b, offset_at(b, "weight_b", 2), 65); },
       "tensor 'weight_b': offset 65 not aligned to 32"},
      {"OverlappingTensors", [](Bytes& b) { put<uint64_t>(b, offset_at(b, "weight_b", 2), 32); },
       "tensor 'weight_b': data at offset 32 overlaps tensor 'weight_a'"},
      {"DataPastEnd", [](Bytes& b) { put<uint64_t>(b, offset_at(b, "weight_c", 1), 1ull << 20); },
       "tensor 'weight_c': data at offset 1048576 (16 bytes) extends past the end of the file"},
      {"OffsetNearU64Max", [](Bytes& b) { put<uint64_t>(b, offset_at(b, "weight_c", 1), ~uint64_t{31}); },
       "extends past the end of the file"},
      {"DimsProductOverflows",
       [](Bytes& b) {
         put<uint64_t>(b, dims_at(b, "weight_a"), 1ull << 32);
         put<uint64_t>(b, dims_at(b, "weight_a") + 8, 1ull << 32);
       },
       "tensor 'weight_a': element count overflows 64 bits at dimension 1"},
      {"ByteSizeOverflows",  // 64 x 2.8e17 elements fit in 64 bits, their Q8_0 bytes (x 34 / 32) do not
       [](Bytes& b) { put<uint64_t>(b, dims_at(b, "weight_b") + 8, 280'000'000'000'000'000ull); },
       "tensor 'weight_b': byte size overflows 64 bits"},
      {"FiveDims", [](Bytes& b) { put<uint32_t>(b, n_dims_at(b, "weight_a"), 5); },
       "tensor 'weight_a': n_dims 5 is out of range 1..4"},
      {"ZeroDims", [](Bytes& b) { put<uint32_t>(b, n_dims_at(b, "weight_a"), 0); },
       "n_dims 0 is out of range"},
      {"ZeroDim", [](Bytes& b) { put<uint64_t>(b, dims_at(b, "weight_a") + 8, 0); },
       "tensor 'weight_a': dimension 1 is zero"},
      {"RowNotWholeBlocks", [](Bytes& b) { put<uint64_t>(b, dims_at(b, "weight_b"), 48); },
       "tensor 'weight_b': row length 48 is not a multiple of the Q8_0 block size 32"},
      {"DuplicateTensorName", [](Bytes& b) { rename(b, "weight_c", "weight_a"); },
       "tensor 'weight_a': duplicate tensor name"},
      {"TensorNameTooLong", [](Bytes& b) { put<uint64_t>(b, find_name(b, "weight_a") - 8, 64); },
       "name is 64 bytes, more than 63"},
  };
}

class GgufCorruptTest : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(GgufCorruptTest, RejectedWithClearMessage) {
  const CorruptCase& c = GetParam();
  Bytes bytes = base_file();
  c.corrupt(bytes);
  const std::filesystem::path path =
      std::filesystem::path(::testing::TempDir()) / ("corrupt_" + c.name + ".gguf");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  try {
    GgufFile::open(path);
    FAIL() << "opened a corrupt file; expected '" << c.expected << "'";
  } catch (const GgufError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(path.string() + ": ", 0), 0u)
        << "message does not start with the path: " << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << "message: " << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GgufCorruptTest, ::testing::ValuesIn(corrupt_cases()),
                         [](const ::testing::TestParamInfo<CorruptCase>& info) { return info.param.name; });

std::filesystem::path write_temp(const Bytes& bytes, const std::string& name) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

TEST(GgufCorrupt, BaseFileIsValid) {
  const GgufFile file = GgufFile::open(write_temp(base_file(), "corrupt_base.gguf"));
  EXPECT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.get_tensor("weight_b").offset, 64u);
  EXPECT_EQ(file.get_tensor("weight_c").offset, 224u);
}

// Every cut before the end of the last tensor's data throws GgufError. (The 16 bytes of padding after
// weight_c are not needed to read the file.)
TEST(GgufCorrupt, EveryTruncationIsRejected) {
  const Bytes full = base_file();
  for (size_t size = 0; size < full.size() - 16; ++size) {
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
    EXPECT_THROW(GgufFile::open(write_temp(cut, "corrupt_truncated.gguf")), GgufError) << "size " << size;
  }
}

// Random byte damage never crashes: the file either opens or throws GgufError.
TEST(GgufCorrupt, RandomDamageNeverCrashes) {
  const Bytes full = base_file();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 1000; ++trial) {
    Bytes damaged = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      damaged[rng() % damaged.size()] = static_cast<std::byte>(rng() & 0xFF);
    }
    try {
      GgufFile::open(write_temp(damaged, "corrupt_random.gguf"));
    } catch (const GgufError&) {
    }
  }
}

TEST(GgufCorrupt, MissingFile) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL() << "opened a missing file";
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf: cannot open"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kvshrink::engine
