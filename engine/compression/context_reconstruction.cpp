#include "engine/compression/context_reconstruction.h"

#include <stdexcept>

namespace kvshrink::engine {

std::vector<std::vector<float>> reconstruction_attention(LlamaModel& model, const kvstore::KvStore& kv,
                                                         std::span<const TokenId> instruction) {
  const auto& context = kv.token_ids();
  if (static_cast<int64_t>(context.size()) != kv.next_position()) {
    throw std::logic_error("reconstruction_attention: the store keeps no token ids");
  }
  auto options = kv.options();
  options.track_attention_mass = true;
  options.attention_mass_max = true;            // KVzip's score: the largest attention a token gets
  auto probe = kv.copy_into(options, nullptr);  // nullptr: a pool of its own, unlimited
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      for (const auto& segment : probe.head(layer, h).segments()) {
        for (int64_t i = 0; i < segment.tokens(); ++i) segment.mass(i) = 0.0f;
      }
    }
  }
  std::vector<TokenId> repeat(instruction.begin(), instruction.end());
  repeat.insert(repeat.end(), context.begin(), context.end());
  model.forward(repeat, probe, LogitsFor::kNone);

  // kv's tokens of each head come first in the probe's (the copy keeps their order, the repeat is
  // appended after them)
  std::vector<std::vector<float>> out(static_cast<size_t>(kv.n_layers() * kv.owned_kv_heads()));
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      auto& scores = out[layer * kv.owned_kv_heads() + h];
      const auto originals = static_cast<size_t>(kv.head(layer, h).tokens());
      for (const auto& segment : probe.head(layer, h).segments()) {
        for (int64_t i = 0; i < segment.tokens() && scores.size() < originals; ++i)
          scores.push_back(segment.mass(i));
      }
    }
  }
  return out;
}

}  // namespace kvshrink::engine
