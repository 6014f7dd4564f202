#include "engine/generation/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace kvshrink::engine {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    throw std::invalid_argument(fmt::format("temperature must be >= 0, got {}", p.temperature));
  }
  if (p.top_k < 0) throw std::invalid_argument(fmt::format("top-k must be >= 0, got {}", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    throw std::invalid_argument(fmt::format("top-p must be in (0, 1], got {}", p.top_p));
  }
}

TokenId argmax(std::span<const float> logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  validate(params);
}

TokenId Sampler::sample(std::span<const float> logits) {
  if (params_.temperature == 0.0f) return argmax(logits);

  // Candidates sorted by logit, best first (ties by lower id), cut to top_k.
  std::vector<TokenId> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t keep = params_.top_k > 0 ? std::min<size_t>(params_.top_k, ids.size()) : ids.size();
  const auto better = [&](TokenId a, TokenId b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
  ids.resize(keep);

  // Softmax of logits / temperature over the candidates (double for a stable cumulative sum).
  std::vector<double> probs(keep);
  const double top = logits[ids[0]];
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp((logits[ids[i]] - top) / params_.temperature);
    sum += probs[i];
  }
  // Nucleus: smallest prefix with cumulative probability >= top_p.
  size_t nucleus = keep;
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i] / sum;
    if (cumulative >= params_.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  std::discrete_distribution<size_t> pick(probs.begin(),
                                          probs.begin() + static_cast<std::ptrdiff_t>(nucleus));
  return ids[pick(rng_)];
}

}  // namespace kvshrink::engine
