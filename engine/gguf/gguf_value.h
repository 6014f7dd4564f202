// GGUF metadata values: the 13 GGUF value types and a typed value (scalar, string or array).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace kvshrink::engine {

enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

const char* gguf_value_type_name(GgufValueType type);

// An array holds elements of one scalar or string type (nested arrays are rejected, as ggml does).
struct GgufArray {
  GgufValueType element_type;
  std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>, std::vector<int16_t>,
               std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>, std::vector<bool>,
               std::vector<std::string>, std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>
      elements;

  friend bool operator==(const GgufArray&, const GgufArray&) = default;
};

struct GgufValue {
  GgufValueType type;
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string, GgufArray,
               uint64_t, int64_t, double>
      data;

  friend bool operator==(const GgufValue&, const GgufValue&) = default;
};

}  // namespace kvshrink::engine
