// Picks the next token from logits. temperature == 0 is greedy (argmax, lowest id on ties).
// Otherwise, as in vLLM and HF: logits / temperature, keep the top_k best (0 = all), keep the
// smallest prefix whose probability reaches top_p, renormalise, draw with the seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::engine {

struct SamplingParams {
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

// Throws std::invalid_argument for temperature < 0, top_k < 0 or top_p outside (0, 1].
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  TokenId sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

TokenId argmax(std::span<const float> logits);

}  // namespace kvshrink::engine
