#include "kvstore/h2o_press.h"

#include <stdexcept>

#include "kvstore/window_scores.h"

namespace kvshrink::kvstore {

void H2oPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  size_t t = 0;
  for (const auto& segment : input.head.segments()) {
    if (!segment.tracks_mass() && segment.tokens() > 0)
      throw std::logic_error("h2o: the store does not track attention mass");
    for (int64_t i = 0; i < segment.tokens(); ++i, ++t) {
      const int64_t seen_by = input.next_position - segment.position(i);  // queries at positions >= its own
      scores[t] = segment.mass(i) / static_cast<float>(seen_by > 0 ? seen_by : 1);
    }
  }
  protect_recent(scores, window_);
}

}  // namespace kvshrink::kvstore
