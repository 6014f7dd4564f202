// The data a byte-level BPE tokenizer is built from (GGUF tokenizer.ggml.*), and its id types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvshrink::engine {

using TokenId = int32_t;

enum class PreTokenizer { kSmollm, kLlamaBpe, kQwen2, kGpt2 };

// GGUF tokenizer.ggml.token_type values.
enum class TokenKind : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct TokenizerVocab {
  std::vector<std::string> tokens;  // byte-level encoded text per id ("Ġthe")
  std::vector<TokenKind> kinds;     // per id
  std::vector<std::string> merges;  // "A B", index = rank
  PreTokenizer pre_tokenizer = PreTokenizer::kSmollm;
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId eot_id = -1;  // -1 if absent
  bool add_bos = false;
};

}  // namespace kvshrink::engine
