// Bounds-checked little-endian reads over an in-memory byte range (a mapped GGUF file). Every read
// checks the bytes left first, so a corrupt length or count can never read past the end.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace kvshrink::engine {

// Thrown when a read needs more bytes than are left; the GGUF reader adds the file and location.
class TruncatedInput : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ByteCursor {
 public:
  static_assert(std::endian::native == std::endian::little, "GGUF reads assume a little-endian host");

  explicit ByteCursor(std::span<const std::byte> bytes) : bytes_(bytes) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return bytes_.size() - position_; }

  // One little-endian scalar (integer or IEEE float).
  template <typename T>
  requires std::is_arithmetic_v<T> T read() {
    T value;
    std::memcpy(&value, take(sizeof(T)), sizeof(T));
    return value;
  }

  // The next n bytes, as a view into the underlying range.
  std::string_view read_bytes(uint64_t n) {
    return {reinterpret_cast<const char*>(take(n)), static_cast<size_t>(n)};
  }

 private:
  const std::byte* take(uint64_t n) {
    if (n > remaining()) {
      throw TruncatedInput("unexpected end of file: need " + std::to_string(n) + " bytes at offset " +
                           std::to_string(position_) + ", " + std::to_string(remaining()) + " left");
    }
    const std::byte* start = bytes_.data() + position_;
    position_ += n;
    return start;
  }

  std::span<const std::byte> bytes_;
  uint64_t position_ = 0;
};

}  // namespace kvshrink::engine
