// UTF-8 <-> code points. Decoding for tokenization is lenient the way llama.cpp's
// unicode_cpts_from_utf8 is: a byte that does not start a complete sequence becomes U+FFFD and
// decoding resumes at the next byte; overlong forms and surrogates pass through unchanged.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvshrink::engine::utf8 {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

std::u32string decode_lenient(std::string_view text);

void append(std::string& out, char32_t code_point);  // code_point <= 0x10FFFF
std::string encode(std::u32string_view code_points);

// Number of leading bytes of `bytes` to emit now: all of it except a trailing sequence that is
// incomplete but could still become valid when more bytes arrive.
size_t complete_prefix_length(std::string_view bytes);

// Strict validation: every byte that is not part of a well-formed sequence (no overlongs, no
// surrogates, nothing above U+10FFFF) is replaced by U+FFFD.
std::string replace_invalid(std::string_view bytes);

}  // namespace kvshrink::engine::utf8
