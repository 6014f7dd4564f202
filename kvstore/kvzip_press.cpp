#include "kvstore/kvzip_press.h"

#include <stdexcept>

namespace kvshrink::kvstore {

void KvzipPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  if (input.reconstruction_attention.size() != scores.size()) {
    throw std::logic_error("kvzip: no reconstruction attention for this head");
  }
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      scores[t] = segment.position(i) < sinks_ ? kAlwaysKeep : input.reconstruction_attention[t];
    }
  }
}

}  // namespace kvshrink::kvstore
