// Pre-tokenization: splits text into the words that BPE merges within, exactly as llama.cpp's
// unicode_regex_split does for these pre-tokenizer types (hand-written matchers, no regex engine):
//   kGpt2      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kSmollm    \p{N} first (every number code point becomes its own piece), then kGpt2 in each piece
//   kLlamaBpe  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//              ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2     kLlamaBpe with \p{N} in place of \p{N}{1,3}
// The text is decoded leniently (utf8.h): invalid bytes come back as U+FFFD.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer_vocab.h"

namespace kvshrink::engine {

std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer pre_tokenizer);

}  // namespace kvshrink::engine
