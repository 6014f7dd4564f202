#include "engine/tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "engine/tokenizer/code_point_class.h"
#include "engine/tokenizer/utf8.h"

namespace kvshrink::engine {
namespace {

// Code points of the text with their classes. A matcher looks at positions [pos, end) only: a
// piece from an earlier split is a hard boundary, as in llama.cpp.
class ClassifiedText {
 public:
  explicit ClassifiedText(std::string_view text) : code_points_(utf8::decode_lenient(text)) {
    classes_.reserve(code_points_.size());
    for (char32_t code_point : code_points_) classes_.push_back(classify_code_point(code_point));
  }

  size_t size() const { return code_points_.size(); }
  char32_t at(size_t pos) const { return code_points_[pos]; }
  CodePointClass class_at(size_t pos) const { return classes_[pos]; }
  bool is(size_t pos, size_t end, CodePointClass c) const { return pos < end && classes_[pos] == c; }
  bool is_newline(size_t pos, size_t end) const {
    return pos < end && (code_points_[pos] == U'\r' || code_points_[pos] == U'\n');
  }
  // End of the run of class `c` that starts at `pos`.
  size_t run_end(size_t pos, size_t end, CodePointClass c) const {
    while (is(pos, end, c)) ++pos;
    return pos;
  }
  std::string utf8(size_t begin, size_t end) const {
    return utf8::encode(std::u32string_view(code_points_).substr(begin, end - begin));
  }

 private:
  std::u32string code_points_;
  std::vector<CodePointClass> classes_;
};

struct Piece {
  size_t begin;
  size_t end;
};

// Length of the match at `pos`; always >= 1.
using Matcher = size_t (*)(const ClassifiedText& text, size_t pos, size_t end);

// 's|'t|'re|'ve|'m|'ll|'d, optionally ASCII case-insensitive. Returns 0 for no match.
size_t match_contraction(const ClassifiedText& text, size_t pos, size_t end, bool ignore_case) {
  if (text.at(pos) != U'\'' || pos + 1 >= end) return 0;
  auto letter = [&](size_t i) {
    const char32_t c = text.at(i);
    return (ignore_case && c >= U'A' && c <= U'Z') ? c - U'A' + U'a' : c;
  };
  const char32_t first = letter(pos + 1);
  if (first == U's' || first == U't' || first == U'm' || first == U'd') return 2;
  if (pos + 2 >= end) return 0;
  const char32_t second = letter(pos + 2);
  if ((first == U'r' && second == U'e') || (first == U'v' && second == U'e') ||
      (first == U'l' && second == U'l')) {
    return 3;
  }
  return 0;
}

// The GPT-2 regex. \s+(?!\S) leaves the last whitespace of a run to the word after it.
size_t match_gpt2(const ClassifiedText& text, size_t pos, size_t end) {
  if (const size_t length = match_contraction(text, pos, end, /*ignore_case=*/false)) return length;

  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class.
  const size_t run_start = (text.at(pos) == U' ' && pos + 1 < end) ? pos + 1 : pos;
  const CodePointClass run_class = text.class_at(run_start);
  if (run_class != CodePointClass::kWhitespace) return text.run_end(run_start, end, run_class) - pos;

  // '\s+(?!\S)|\s+'
  const size_t spaces = text.run_end(pos, end, CodePointClass::kWhitespace) - pos;
  return (spaces > 1 && pos + spaces < end) ? spaces - 1 : spaces;
}

// The Llama-3 regex with \p{N}{1,kMaxDigits}.
template <size_t kMaxDigits>
size_t match_llama3(const ClassifiedText& text, size_t pos, size_t end) {
  if (const size_t length = match_contraction(text, pos, end, /*ignore_case=*/true)) return length;

  const CodePointClass pos_class = text.class_at(pos);
  // '[^\r\n\p{L}\p{N}]?\p{L}+'
  if (!text.is_newline(pos, end) && pos_class != CodePointClass::kNumber) {
    if (pos_class == CodePointClass::kLetter) return text.run_end(pos, end, CodePointClass::kLetter) - pos;
    if (text.is(pos + 1, end, CodePointClass::kLetter)) {
      return text.run_end(pos + 1, end, CodePointClass::kLetter) - pos;
    }
  }

  // '\p{N}{1,kMaxDigits}'
  if (pos_class == CodePointClass::kNumber) {
    return std::min(text.run_end(pos, end, CodePointClass::kNumber) - pos, kMaxDigits);
  }

  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t run_start = (text.at(pos) == U' ' && pos + 1 < end) ? pos + 1 : pos;
  if (text.class_at(run_start) == CodePointClass::kOther) {
    size_t match_end = text.run_end(run_start, end, CodePointClass::kOther);
    while (text.is_newline(match_end, end)) ++match_end;
    return match_end - pos;
  }

  // '\s*[\r\n]+|\s+(?!\S)|\s+': up to the last newline of the whitespace run if it has one.
  const size_t run_end = text.run_end(pos, end, CodePointClass::kWhitespace);
  for (size_t i = run_end; i > pos; --i) {
    if (text.is_newline(i - 1, end)) return i - pos;
  }
  const size_t spaces = run_end - pos;
  return (spaces > 1 && run_end < end) ? spaces - 1 : spaces;
}

std::vector<Piece> split_each(const ClassifiedText& text, const std::vector<Piece>& pieces, Matcher matcher) {
  std::vector<Piece> words;
  words.reserve(pieces.size());
  for (const Piece& piece : pieces) {
    for (size_t pos = piece.begin; pos < piece.end;) {
      const size_t length = matcher(text, pos, piece.end);
      words.push_back({pos, pos + length});
      pos += length;
    }
  }
  return words;
}

// '\p{N}': every number code point alone; the text between numbers stays in one piece.
std::vector<Piece> split_numbers(const ClassifiedText& text, const std::vector<Piece>& pieces) {
  std::vector<Piece> out;
  for (const Piece& piece : pieces) {
    for (size_t pos = piece.begin; pos < piece.end;) {
      size_t end = pos + 1;
      if (text.class_at(pos) != CodePointClass::kNumber) {
        while (end < piece.end && text.class_at(end) != CodePointClass::kNumber) ++end;
      }
      out.push_back({pos, end});
      pos = end;
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer pre_tokenizer) {
  const ClassifiedText classified(text);
  std::vector<Piece> pieces;
  if (classified.size() > 0) pieces.push_back({0, classified.size()});

  switch (pre_tokenizer) {
    case PreTokenizer::kGpt2:
      pieces = split_each(classified, pieces, match_gpt2);
      break;
    case PreTokenizer::kSmollm:
      pieces = split_each(classified, split_numbers(classified, pieces), match_gpt2);
      break;
    case PreTokenizer::kLlamaBpe:
      pieces = split_each(classified, pieces, match_llama3<3>);
      break;
    case PreTokenizer::kQwen2:
      pieces = split_each(classified, pieces, match_llama3<1>);
      break;
  }

  std::vector<std::string> words;
  words.reserve(pieces.size());
  for (const Piece& piece : pieces) words.push_back(classified.utf8(piece.begin, piece.end));
  return words;
}

}  // namespace kvshrink::engine
