// The character classes the pre-tokenizer regexes use: \p{L}, \p{N} and \s (Unicode White_Space),
// looked up in ICU.
#pragma once

namespace kvshrink::engine {

// Every code point is in exactly one class: White_Space code points are never letters or numbers.
enum class CodePointClass { kLetter, kNumber, kWhitespace, kOther };

CodePointClass classify_code_point(char32_t code_point);

}  // namespace kvshrink::engine
