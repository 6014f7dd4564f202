#include "kvstore/snapkv_press.h"

#include <algorithm>

#include "kvstore/window_scores.h"

namespace kvshrink::kvstore {

void SnapKvPress::score(const HeadScoringInput& input, std::span<float> scores) const {
  mean_window_attention(input, params_.window, scores);
  const auto prefix =
      static_cast<size_t>(std::max<int64_t>(0, static_cast<int64_t>(scores.size()) - params_.window));
  pool_scores(scores.first(prefix), params_.pool_kernel, params_.pool_type);
  protect_recent(scores, params_.window);
}

}  // namespace kvshrink::kvstore
