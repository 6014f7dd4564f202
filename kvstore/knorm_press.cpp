#include "kvstore/knorm_press.h"

#include <cmath>
#include <vector>

namespace kvshrink::kvstore {

void KnormPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  const int64_t d = input.head.head_dim();
  std::vector<float> key(static_cast<size_t>(d));
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      segment.read_key(i, key.data());
      double squares = 0.0;
      for (int64_t k = 0; k < d; ++k) squares += static_cast<double>(key[k]) * key[k];
      scores[t] = -static_cast<float>(std::sqrt(squares));
    }
  }
}

}  // namespace kvshrink::kvstore
