#include "kvstore/tova_press.h"

#include "kvstore/window_scores.h"

namespace kvshrink::kvstore {

void TovaPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  mean_window_attention(input, 1, scores);
  protect_recent(scores, 1);
}

}  // namespace kvshrink::kvstore
