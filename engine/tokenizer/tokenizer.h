// Byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.model = "gpt2"), with the
// pre-tokenizers llama.cpp calls "smollm", "llama-bpe", "qwen2" and "gpt-2"
// (shared/research/engine-and-formats.md §B6). Token ids match llama.cpp's llama_tokenize with
// parse_special = true.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/bpe_merges.h"
#include "engine/tokenizer/special_token_splitter.h"
#include "engine/tokenizer/tokenizer_vocab.h"

namespace kvshrink::engine {

class GgufFile;

class Tokenizer {
 public:
  // Throws std::invalid_argument for an inconsistent vocab (sizes, ids out of range, bad merges).
  explicit Tokenizer(TokenizerVocab vocab);
  // Reads tokenizer.ggml.* from the file; throws GgufError for a missing or unsupported tokenizer.
  static Tokenizer from_gguf(const GgufFile& file);

  // Special tokens are split out first (control and unknown ones only when parse_special;
  // user-defined ones always, as llama.cpp does). Prepends BOS when the vocab says add_bos.
  std::vector<TokenId> encode(std::string_view text, bool parse_special = true) const;

  // Raw bytes of one token (may be a partial UTF-8 sequence); control tokens render as "" unless
  // render_special. Throws std::out_of_range for an id outside the vocab.
  std::string token_bytes(TokenId id, bool render_special = false) const;
  std::string decode(std::span<const TokenId> ids, bool render_special = false) const;

  // eos, eot, and the end-of-turn / FIM-separator tokens llama.cpp stops on (SmolLM2: ids 0, 2, 4).
  bool is_end_of_generation(TokenId id) const;
  TokenId bos_id() const { return vocab_.bos_id; }
  TokenId eos_id() const { return vocab_.eos_id; }
  size_t vocab_size() const { return vocab_.tokens.size(); }

 private:
  struct StringViewHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };

  void append_word(std::string_view byte_level_word, std::vector<TokenId>& ids) const;

  TokenizerVocab vocab_;
  BpeMerges merges_;
  SpecialTokenSplitter special_tokens_;
  std::unordered_map<std::string, TokenId, StringViewHash, std::equal_to<>> id_of_text_;
  std::vector<std::string> rendered_bytes_;  // per id: bytes with specials rendered
  std::vector<TokenId> end_of_generation_ids_;
};

// Streams token bytes to text, holding back an incomplete UTF-8 sequence until it completes.
// Both push and finish return valid UTF-8: invalid bytes become U+FFFD.
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
