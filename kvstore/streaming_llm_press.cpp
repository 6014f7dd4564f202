#include "kvstore/streaming_llm_press.h"

namespace kvshrink::kvstore {

void StreamingLlmPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      const int32_t position = segment.position(i);
      scores[t] = position < sinks_ ? kAlwaysKeep : static_cast<float>(position);
    }
  }
}

}  // namespace kvshrink::kvstore
