// Splits text at the literal strings of special tokens before pre-tokenization, as llama.cpp's
// tokenizer_st_partition does: special tokens are tried longest first, and each one splits every
// remaining raw-text fragment at all of its non-overlapping occurrences, left to right.
// Special tokens are the CONTROL, USER_DEFINED and UNKNOWN kinds; without parse_special only
// USER_DEFINED tokens are split out.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer_vocab.h"

namespace kvshrink::engine {

struct TextFragment {
  std::string_view text;  // raw text to pre-tokenize; empty for a special token
  TokenId special_id;     // -1 for raw text
};

class SpecialTokenSplitter {
 public:
  SpecialTokenSplitter(const std::vector<std::string>& tokens, const std::vector<TokenKind>& kinds);

  // Fragments in text order; raw-text fragments are never empty. They view into `text`.
  std::vector<TextFragment> split(std::string_view text, bool parse_special) const;

 private:
  struct SpecialToken {
    TokenId id;
    std::string text;
    bool user_defined;  // split out even without parse_special
  };
  std::vector<SpecialToken> longest_first_;
};

}  // namespace kvshrink::engine
