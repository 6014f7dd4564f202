// Writes GGUF v3 files (tests build tiny models with it; later steps write side files with it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf/gguf_value.h"
#include "kernels/tensor_type.h"

namespace kvshrink::engine {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);

  // Metadata in insertion order; setting an existing key replaces its value.
  void set(std::string key, GgufValue value);
  void set_uint32(std::string key, uint32_t value);
  void set_int32(std::string key, int32_t value);
  void set_float32(std::string key, float value);
  void set_bool(std::string key, bool value);
  void set_string(std::string key, std::string value);
  void set_string_array(std::string key, std::vector<std::string> values);
  void set_int32_array(std::string key, std::vector<int32_t> values);
  void set_float32_array(std::string key, std::vector<float> values);

  // dims innermost first; data must hold exactly the packed size of (dims, type).
  void add_tensor(std::string name, std::vector<uint64_t> dims, kernels::TensorType type,
                  std::span<const std::byte> data);
  void add_f32_tensor(std::string name, std::vector<uint64_t> dims, std::span<const float> data);

  // Serialises everything; throws std::runtime_error on I/O failure.
  std::vector<std::byte> to_bytes() const;
  void write(const std::filesystem::path& path) const;

 private:
  struct PendingTensor {
    std::string name;
    std::vector<uint64_t> dims;
    kernels::TensorType type;
    std::vector<std::byte> data;
  };
  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace kvshrink::engine
