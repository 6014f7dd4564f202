// Byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.model = "gpt2"), with the
// pre-tokenizers llama.cpp calls "smollm", "llama-bpe" and "qwen2"
// (shared/research/engine-and-formats.md §B6). Token ids match llama.cpp's llama_tokenize with
// parse_special = true.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvshrink::engine {

class GgufFile;

using TokenId = int32_t;

enum class PreTokenizer { kSmollm, kLlamaBpe, kQwen2, kGpt2 };

// GGUF tokenizer.ggml.token_type values.
enum class TokenKind : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

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

class Tokenizer {
 public:
  explicit Tokenizer(TokenizerVocab vocab);
  // Reads tokenizer.ggml.* from the file; throws GgufError for a missing or unsupported tokenizer.
  static Tokenizer from_gguf(const GgufFile& file);

  // Special tokens (control / user-defined) are split out first when parse_special is set.
  // Prepends BOS when the vocab says add_bos.
  std::vector<TokenId> encode(std::string_view text, bool parse_special = true) const;

  // Raw bytes of one token (may be a partial UTF-8 sequence); control tokens render as "" unless
  // render_special.
  std::string token_bytes(TokenId id, bool render_special = false) const;
  std::string decode(std::span<const TokenId> ids, bool render_special = false) const;

  bool is_end_of_generation(TokenId id) const;  // eos, eot, <|im_end|>, <|endoftext|>
  TokenId bos_id() const { return vocab_.bos_id; }
  TokenId eos_id() const { return vocab_.eos_id; }
  size_t vocab_size() const { return vocab_.tokens.size(); }

 private:
  TokenizerVocab vocab_;
  // ... implementation state (merge ranks, token -> id, special tokens sorted longest first)
};

// Streams token bytes to text, holding back an incomplete UTF-8 sequence until it completes.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(TokenId id);  // returns the complete UTF-8 text now available
  std::string finish();          // whatever is left (invalid bytes replaced by U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace kvshrink::engine
