#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace kvshrink::engine {
namespace {

bool maps_to_itself(int byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

struct ByteLevelAlphabet {
  std::array<char32_t, 256> code_point_of_byte{};
  std::array<std::string, 256> utf8_of_byte;
  std::array<int16_t, 0x144> byte_of_code_point{};  // -1 where no byte maps to the code point

  ByteLevelAlphabet() {
    byte_of_code_point.fill(-1);
    char32_t next_shifted = 0x100;
    for (int byte = 0; byte < 256; ++byte) {
      const char32_t code_point = maps_to_itself(byte) ? static_cast<char32_t>(byte) : next_shifted++;
      code_point_of_byte[byte] = code_point;
      utf8::append(utf8_of_byte[byte], code_point);
      byte_of_code_point[code_point] = static_cast<int16_t>(byte);
    }
  }
};

const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet instance;
  return instance;
}

}  // namespace

char32_t byte_to_code_point(uint8_t byte) {
  return alphabet().code_point_of_byte[byte];
}

std::optional<uint8_t> code_point_to_byte(char32_t code_point) {
  const auto& table = alphabet().byte_of_code_point;
  if (code_point >= table.size() || table[code_point] < 0) return std::nullopt;
  return static_cast<uint8_t>(table[code_point]);
}

std::string encode_byte_level(std::string_view bytes) {
  const auto& utf8_of_byte = alphabet().utf8_of_byte;
  std::string text;
  text.reserve(bytes.size() * 2);
  for (char byte : bytes) text += utf8_of_byte[static_cast<uint8_t>(byte)];
  return text;
}

std::string decode_byte_level(std::string_view text) {
  std::string bytes;
  bytes.reserve(text.size());
  for (char32_t code_point : utf8::decode_lenient(text)) {
    if (const auto byte = code_point_to_byte(code_point)) {
      bytes.push_back(static_cast<char>(*byte));
    } else {
      utf8::append(bytes, code_point);
    }
  }
  return bytes;
}

}  // namespace kvshrink::engine
