// Tokenizer::from_gguf: the tokenizer.ggml.* keys (shared/research/engine-and-formats.md §B6).
#include <fmt/format.h>

#include <optional>
#include <stdexcept>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::engine {
namespace {

// tokenizer.ggml.pre names, as llama.cpp spells them.
std::optional<PreTokenizer> pre_tokenizer_named(std::string_view name) {
  if (name == "smollm") return PreTokenizer::kSmollm;
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") return PreTokenizer::kLlamaBpe;
  if (name == "qwen2") return PreTokenizer::kQwen2;
  if (name == "gpt-2") return PreTokenizer::kGpt2;
  return std::nullopt;
}

std::vector<TokenKind> token_kinds(const GgufFile& file, size_t n_tokens) {
  if (file.find("tokenizer.ggml.token_type") == nullptr)
    return std::vector<TokenKind>(n_tokens, TokenKind::kNormal);
  const std::vector<int64_t> types = file.get_int_array("tokenizer.ggml.token_type");
  if (types.size() != n_tokens) {
    throw GgufError(fmt::format("{}: tokenizer.ggml.token_type has {} entries for {} tokens",
                                file.path().string(), types.size(), n_tokens));
  }
  std::vector<TokenKind> kinds;
  kinds.reserve(n_tokens);
  for (size_t id = 0; id < n_tokens; ++id) {
    if (types[id] < static_cast<int64_t>(TokenKind::kNormal) ||
        types[id] > static_cast<int64_t>(TokenKind::kByte)) {
      throw GgufError(fmt::format("{}: tokenizer.ggml.token_type[{}] = {} is no token type",
                                  file.path().string(), id, types[id]));
    }
    kinds.push_back(static_cast<TokenKind>(types[id]));
  }
  return kinds;
}

// An optional token id key; -1 when absent.
TokenId token_id(const GgufFile& file, std::string_view key, size_t n_tokens) {
  const std::optional<uint64_t> id = file.find_uint(key);
  if (!id) return -1;
  if (*id >= n_tokens) {
    throw GgufError(fmt::format("{}: {} = {} is outside the vocab of {} tokens", file.path().string(), key,
                                *id, n_tokens));
  }
  return static_cast<TokenId>(*id);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
  const std::string path = file.path().string();
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model != "gpt2") {
    throw GgufError(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (only byte-level BPE 'gpt2')",
                                path, model));
  }
  const std::optional<std::string> pre_name = file.find_string("tokenizer.ggml.pre");
  if (!pre_name) throw GgufError(fmt::format("{}: tokenizer.ggml.pre is missing", path));
  const std::optional<PreTokenizer> pre_tokenizer = pre_tokenizer_named(*pre_name);
  if (!pre_tokenizer) {
    throw GgufError(fmt::format(
        "{}: tokenizer.ggml.pre '{}' is not supported (smollm, llama-bpe, llama3, llama-v3, qwen2, gpt-2)",
        path, *pre_name));
  }

  TokenizerVocab vocab;
  vocab.tokens = file.get_string_array("tokenizer.ggml.tokens");
  vocab.kinds = token_kinds(file, vocab.tokens.size());
  vocab.merges = file.get_string_array("tokenizer.ggml.merges");
  vocab.pre_tokenizer = *pre_tokenizer;
  vocab.bos_id = token_id(file, "tokenizer.ggml.bos_token_id", vocab.tokens.size());
  vocab.eos_id = token_id(file, "tokenizer.ggml.eos_token_id", vocab.tokens.size());
  vocab.eot_id = token_id(file, "tokenizer.ggml.eot_token_id", vocab.tokens.size());
  // llama.cpp defaults add_bos to true for llama-bpe and to false for the others.
  vocab.add_bos =
      file.find_bool("tokenizer.ggml.add_bos_token").value_or(*pre_tokenizer == PreTokenizer::kLlamaBpe);

  try {
    return Tokenizer(std::move(vocab));
  } catch (const std::invalid_argument& error) {
    throw GgufError(fmt::format("{}: {}", path, error.what()));
  }
}

}  // namespace kvshrink::engine
