#include "kvstore/knorm_press.h"

#include <cmath>

namespace kvshrink::kvstore {

void KnormPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  const int64_t d = input.head.head_dim();
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      const float* key = segment.key(i);
      double squares = 0.0;
      for (int64_t k = 0; k < d; ++k) squares += static_cast<double>(key[k]) * key[k];
      scores[t] = -static_cast<float>(std::sqrt(squares));
    }
  }
}

}  // namespace kvshrink::kvstore
