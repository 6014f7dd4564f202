// GPT-2 byte-level alphabet (bytes_to_unicode; shared/research/engine-and-formats.md §B6): every
// byte maps to one printable code point so that BPE tokens are text.
//   0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF -> the code point of the same value
//   the other 68 bytes, in increasing order (0x00-0x20, 0x7F-0xA0, 0xAD) -> U+0100 ... U+0143
// so ' ' (0x20) -> U+0120 'Ġ' and '\n' (0x0A) -> U+010A 'Ċ'.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvshrink::engine {

char32_t byte_to_code_point(uint8_t byte);
std::optional<uint8_t> code_point_to_byte(char32_t code_point);  // nullopt outside the alphabet

// Raw bytes -> byte-level text (UTF-8 of the mapped code points).
std::string encode_byte_level(std::string_view bytes);
// Byte-level text -> raw bytes; code points outside the alphabet are kept as their UTF-8.
std::string decode_byte_level(std::string_view text);

}  // namespace kvshrink::engine
