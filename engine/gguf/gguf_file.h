// Read-only view of a GGUF v2/v3 file (layout: shared/research/engine-and-formats.md §B1).
//
//   magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count   x (string key, u32 value type, value)
//   tensor_count x (string name, u32 n_dims, n_dims x u64 dims (innermost first), u32 type, u64 offset)
//   zero padding to general.alignment (default 32)
//   tensor data; tensor i at data_start + offset_i
//
// The file is untrusted input: every count, length, offset and size is checked before use and any
// violation throws GgufError naming the file and what was wrong. Tensor data is memory-mapped
// read-only; the mapping lives as long as the GgufFile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf/gguf_value.h"
#include "kernels/tensor_type.h"

namespace kvshrink::engine {

class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // innermost first: dims[0] = row length (ne0), dims[1] = rows
  kernels::TensorType type;
  uint64_t offset;      // bytes from the start of the tensor-data section
  uint64_t n_elements;  // product of dims
  uint64_t n_bytes;     // bytes of packed data

  uint64_t rows() const { return n_elements / dims[0]; }
};

class GgufFile {
 public:
  // Opens, validates and maps the file. Throws GgufError.
  static GgufFile open(const std::filesystem::path& path);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  // Metadata. find() returns nullptr when absent. The typed getters throw GgufError naming the key
  // when it is absent or of the wrong type; find_* return nullopt when absent (wrong type throws).
  const GgufValue* find(std::string_view key) const;
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  std::string get_string(std::string_view key) const;
  std::optional<std::string> find_string(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;  // any integer type, widened; negative throws
  std::optional<uint64_t> find_uint(std::string_view key) const;
  double get_float(std::string_view key) const;  // FLOAT32 or FLOAT64
  std::optional<double> find_float(std::string_view key) const;
  std::optional<bool> find_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;  // any integer element type

  // Tensors, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  const GgufTensorInfo& get_tensor(std::string_view name) const;  // throws GgufError if absent
  // The packed bytes of a tensor (n_bytes long), inside the mapping.
  std::span<const std::byte> tensor_data(const GgufTensorInfo& tensor) const;

 private:
  struct Mapping;
  GgufFile() = default;
  const GgufValue& require(std::string_view key) const;  // throws GgufError if absent
  GgufError wrong_type(std::string_view key, const GgufValue& value, std::string_view expected) const;

  std::filesystem::path path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::unique_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;
};

}  // namespace kvshrink::engine
