// Hyper-parameters of a Llama-family model, read from GGUF metadata (llama.* keys,
// shared/research/engine-and-formats.md §B3).
#pragma once

#include <cstdint>
#include <string>

namespace kvshrink::engine {

class GgufFile;

struct LlamaConfig {
  int64_t n_layers = 0;
  int64_t n_embd = 0;       // hidden size
  int64_t n_ff = 0;         // feed-forward size
  int64_t n_head = 0;       // query heads
  int64_t n_head_kv = 0;    // key/value heads (GQA)
  int64_t head_dim = 0;     // n_embd / n_head
  int64_t n_ctx_train = 0;  // trained context length
  int64_t vocab_size = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;

  int64_t group_size() const { return n_head / n_head_kv; }  // query heads per kv head

  // Throws GgufError if the file is not a llama model or a value is missing or inconsistent.
  static LlamaConfig from_gguf(const GgufFile& file);
};

}  // namespace kvshrink::engine
