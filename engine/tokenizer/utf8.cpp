#include "engine/tokenizer/utf8.h"

#include <cstdint>

namespace kvshrink::engine::utf8 {
namespace {

bool is_continuation(uint8_t byte) {
  return (byte & 0xC0) == 0x80;
}

// Sequence length announced by a lead byte; 0 for a continuation byte or an impossible lead.
size_t sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xC0) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 0;
}

// Code point of the sequence of `length` bytes at `text[pos]`, or nothing if a continuation byte
// is missing. No check for overlongs or surrogates.
bool decode_sequence(std::string_view text, size_t pos, size_t length, char32_t& code_point) {
  if (length == 0 || pos + length > text.size()) return false;
  const auto lead = static_cast<uint8_t>(text[pos]);
  static constexpr uint8_t kLeadMask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  char32_t value = lead & kLeadMask[length];
  for (size_t i = 1; i < length; ++i) {
    const auto byte = static_cast<uint8_t>(text[pos + i]);
    if (!is_continuation(byte)) return false;
    value = (value << 6) | (byte & 0x3F);
  }
  code_point = value;
  return true;
}

bool is_well_formed(char32_t code_point, size_t length) {
  static constexpr char32_t kSmallestForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallestForLength[length]) return false;  // overlong
  if (code_point >= 0xD800 && code_point <= 0xDFFF) return false;
  return code_point <= 0x10FFFF;
}

}  // namespace

std::u32string decode_lenient(std::string_view text) {
  std::u32string code_points;
  code_points.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = sequence_length(static_cast<uint8_t>(text[pos]));
    char32_t code_point = 0;
    // Values above U+10FFFF (leads 0xF5-0xF7) cannot be re-encoded, so they count as invalid too.
    if (decode_sequence(text, pos, length, code_point) && code_point <= 0x10FFFF) {
      code_points.push_back(code_point);
      pos += length;
    } else {
      code_points.push_back(kReplacementCharacter);
      pos += 1;
    }
  }
  return code_points;
}

void append(std::string& out, char32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

std::string encode(std::u32string_view code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (char32_t code_point : code_points) append(out, code_point);
  return out;
}

size_t complete_prefix_length(std::string_view bytes) {
  // An incomplete sequence is a lead byte among the last three bytes followed only by
  // continuation bytes, fewer than the lead announces.
  const size_t first_candidate = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t pos = bytes.size(); pos > first_candidate; --pos) {
    const auto byte = static_cast<uint8_t>(bytes[pos - 1]);
    if (is_continuation(byte)) continue;
    const size_t length = sequence_length(byte);
    const size_t available = bytes.size() - (pos - 1);
    return length > available ? pos - 1 : bytes.size();
  }
  return bytes.size();
}

std::string replace_invalid(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t length = sequence_length(static_cast<uint8_t>(bytes[pos]));
    char32_t code_point = 0;
    if (decode_sequence(bytes, pos, length, code_point) && is_well_formed(code_point, length)) {
      out.append(bytes.substr(pos, length));
      pos += length;
    } else {
      append(out, kReplacementCharacter);
      pos += 1;
    }
  }
  return out;
}

}  // namespace kvshrink::engine::utf8
