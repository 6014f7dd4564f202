#include "engine/tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <stdexcept>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace kvshrink::engine {
namespace {

// Token texts llama.cpp treats as end of generation whatever the vocab says (llama-vocab.cpp,
// special_eog_ids): end-of-turn markers, and the fill-in-the-middle pad / repository / file
// separator markers. It also forces them to CONTROL.
constexpr auto kEndOfGenerationTexts = std::to_array<std::string_view>({
    "<|endoftext|>", "<|im_end|>",    "<|eot_id|>",   "<|eom_id|>",    "<|end_of_text|>",
    "<|end|>",       "<end_of_turn>", "<EOT>",        "<|fim_pad|>",   "<fim-pad>",
    "<fim_pad>",     "<PAD>",         "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
    "<REPO>",        "<reponame>",    "<|file_sep|>", "[PAD]",
});

bool marks_end_of_generation(std::string_view text) {
  return std::find(kEndOfGenerationTexts.begin(), kEndOfGenerationTexts.end(), text) !=
         kEndOfGenerationTexts.end();
}

bool renders_only_when_special(TokenKind kind) {
  return kind == TokenKind::kControl || kind == TokenKind::kUnknown;
}

void check_id(TokenId id, size_t vocab_size, std::string_view what) {
  if (id < -1 || id >= static_cast<TokenId>(vocab_size)) {
    throw std::invalid_argument(
        fmt::format("{} id {} is outside the vocab of {} tokens", what, id, vocab_size));
  }
}

TokenizerVocab checked(TokenizerVocab vocab) {
  if (vocab.kinds.size() != vocab.tokens.size()) {
    throw std::invalid_argument(
        fmt::format("vocab has {} tokens but {} token kinds", vocab.tokens.size(), vocab.kinds.size()));
  }
  check_id(vocab.bos_id, vocab.tokens.size(), "BOS");
  check_id(vocab.eos_id, vocab.tokens.size(), "EOS");
  check_id(vocab.eot_id, vocab.tokens.size(), "EOT");
  if (vocab.add_bos && vocab.bos_id < 0) {
    throw std::invalid_argument("vocab says add_bos but has no BOS token");
  }
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    if (marks_end_of_generation(vocab.tokens[id])) vocab.kinds[id] = TokenKind::kControl;
  }
  return vocab;
}

// "<0xHH>" -> the byte HH.
std::string byte_token_bytes(const std::string& text) {
  unsigned value = 0;
  const char* digits = text.data() + 3;
  const bool well_formed = text.size() == 6 && text.starts_with("<0x") && text.back() == '>' &&
                           std::from_chars(digits, digits + 2, value, 16).ptr == digits + 2;
  if (!well_formed)
    throw std::invalid_argument(fmt::format("byte token '{}' is not of the form <0xHH>", text));
  return std::string(1, static_cast<char>(value));
}

// What llama.cpp's token_to_piece gives with special = true.
std::string rendered_token_bytes(const std::string& text, TokenKind kind) {
  switch (kind) {
    case TokenKind::kNormal:
      return decode_byte_level(text);
    case TokenKind::kByte:
      return byte_token_bytes(text);
    case TokenKind::kUnused:
      return "";
    case TokenKind::kUnknown:
    case TokenKind::kControl:
    case TokenKind::kUserDefined:
      return text;
  }
  throw std::invalid_argument(fmt::format("unknown token kind {}", static_cast<int32_t>(kind)));
}

}  // namespace

Tokenizer::Tokenizer(TokenizerVocab vocab)
    : vocab_(checked(std::move(vocab))),
      merges_(vocab_.merges),
      special_tokens_(vocab_.tokens, vocab_.kinds) {
  id_of_text_.reserve(vocab_.tokens.size());
  rendered_bytes_.reserve(vocab_.tokens.size());
  for (size_t id = 0; id < vocab_.tokens.size(); ++id) {
    const std::string& text = vocab_.tokens[id];
    id_of_text_[text] = static_cast<TokenId>(id);  // a later duplicate wins, as in llama.cpp
    rendered_bytes_.push_back(rendered_token_bytes(text, vocab_.kinds[id]));
    if (marks_end_of_generation(text)) end_of_generation_ids_.push_back(static_cast<TokenId>(id));
  }
  for (TokenId id : {vocab_.eos_id, vocab_.eot_id}) {
    if (id >= 0 && !is_end_of_generation(id)) end_of_generation_ids_.push_back(id);
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<TokenId> ids;
  if (vocab_.add_bos) ids.push_back(vocab_.bos_id);
  for (const TextFragment& fragment : special_tokens_.split(text, parse_special)) {
    if (fragment.special_id >= 0) {
      ids.push_back(fragment.special_id);
      continue;
    }
    for (const std::string& word : pre_tokenize(fragment.text, vocab_.pre_tokenizer)) {
      append_word(encode_byte_level(word), ids);
    }
  }
  return ids;
}

void Tokenizer::append_word(std::string_view byte_level_word, std::vector<TokenId>& ids) const {
  // llama-bpe sets llama.cpp's ignore_merges: a word that is a token is taken whole.
  if (vocab_.pre_tokenizer == PreTokenizer::kLlamaBpe) {
    if (const auto found = id_of_text_.find(byte_level_word); found != id_of_text_.end()) {
      ids.push_back(found->second);
      return;
    }
  }
  for (std::string_view symbol : merges_.apply(byte_level_word)) {
    if (const auto found = id_of_text_.find(symbol); found != id_of_text_.end()) {
      ids.push_back(found->second);
      continue;
    }
    // Not in the vocab (an incomplete byte-level vocab): llama.cpp falls back to one token per
    // byte of the symbol's text, skipping bytes that are no token.
    for (char byte : symbol) {
      if (const auto found = id_of_text_.find(std::string_view(&byte, 1)); found != id_of_text_.end()) {
        ids.push_back(found->second);
      }
    }
  }
}

std::string Tokenizer::token_bytes(TokenId id, bool render_special) const {
  if (id < 0 || id >= static_cast<TokenId>(vocab_.tokens.size())) {
    throw std::out_of_range(
        fmt::format("token id {} is outside the vocab of {} tokens", id, vocab_.tokens.size()));
  }
  if (!render_special && renders_only_when_special(vocab_.kinds[id])) return "";
  return rendered_bytes_[id];
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool render_special) const {
  std::string text;
  for (TokenId id : ids) text += token_bytes(id, render_special);
  return text;
}

bool Tokenizer::is_end_of_generation(TokenId id) const {
  return std::find(end_of_generation_ids_.begin(), end_of_generation_ids_.end(), id) !=
         end_of_generation_ids_.end();
}

}  // namespace kvshrink::engine
