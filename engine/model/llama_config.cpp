#include "engine/model/llama_config.h"

#include <fmt/format.h>

#include "engine/gguf/gguf_file.h"

namespace kvshrink::engine {

LlamaConfig LlamaConfig::from_gguf(const GgufFile& file) {
  const auto fail = [&](const std::string& what) {
    throw GgufError(fmt::format("{}: {}", file.path().string(), what));
  };
  const auto arch = file.find_string("general.architecture");
  if (!arch) fail("not a model file: general.architecture is missing");
  if (*arch != "llama")
    fail(fmt::format("unsupported architecture '{}' (kvshrink runs llama models)", *arch));

  // llama.cpp's converter writes these as u32; any integer type is accepted and range-checked.
  const auto get_count = [&](const char* key, uint64_t max) -> int64_t {
    const uint64_t value = file.get_uint(key);
    if (value == 0 || value > max) fail(fmt::format("{} = {} is out of range [1, {}]", key, value, max));
    return static_cast<int64_t>(value);
  };
  LlamaConfig c;
  c.n_layers = get_count("llama.block_count", 4096);
  c.n_embd = get_count("llama.embedding_length", 1 << 20);
  c.n_ff = get_count("llama.feed_forward_length", 1 << 22);
  c.n_head = get_count("llama.attention.head_count", 4096);
  c.n_head_kv = file.find_uint("llama.attention.head_count_kv")
                    ? get_count("llama.attention.head_count_kv", 4096)
                    : c.n_head;
  c.n_ctx_train = get_count("llama.context_length", 1 << 24);
  c.rms_eps = static_cast<float>(file.get_float("llama.attention.layer_norm_rms_epsilon"));
  c.rope_freq_base = static_cast<float>(file.find_float("llama.rope.freq_base").value_or(10000.0));

  if (c.n_embd % c.n_head != 0)
    fail(fmt::format("embedding length {} not divisible by {} heads", c.n_embd, c.n_head));
  if (c.n_head % c.n_head_kv != 0) {
    fail(fmt::format("{} query heads not divisible by {} kv heads", c.n_head, c.n_head_kv));
  }
  c.head_dim = c.n_embd / c.n_head;
  if (c.head_dim % 2 != 0) fail(fmt::format("head dimension {} is odd", c.head_dim));
  for (const char* key :
       {"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"}) {
    if (auto value = file.find_uint(key); value && static_cast<int64_t>(*value) != c.head_dim) {
      fail(fmt::format("{} = {} differs from head dimension {} (not supported)", key, *value, c.head_dim));
    }
  }
  if (!(c.rms_eps > 0.0f && c.rms_eps < 1.0f)) fail(fmt::format("rms epsilon {} out of range", c.rms_eps));
  if (!(c.rope_freq_base > 1.0f)) fail(fmt::format("rope frequency base {} out of range", c.rope_freq_base));

  const auto& embd = file.get_tensor("token_embd.weight");
  c.vocab_size = static_cast<int64_t>(embd.rows());
  if (auto vocab = file.find_uint("llama.vocab_size");
      vocab && static_cast<int64_t>(*vocab) != c.vocab_size) {
    fail(fmt::format("llama.vocab_size = {} but token_embd.weight has {} rows", *vocab, c.vocab_size));
  }
  return c;
}

}  // namespace kvshrink::engine
