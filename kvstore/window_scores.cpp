#include "kvstore/window_scores.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvshrink::kvstore {

std::vector<kernels::KvBlockView> key_blocks(const HeadCache& head) {
  std::vector<kernels::KvBlockView> views;
  for (const auto& segment : head.segments()) segment.block_views(views);
  return views;
}

void mean_window_attention(const HeadScoringInput& input, int64_t window, std::span<float> scores) {
  const int64_t d = input.head.head_dim();
  const int64_t rows = std::min(window, input.recent.size());
  std::fill(scores.begin(), scores.end(), 0.0f);
  if (rows == 0) return;
  std::vector<float> queries;
  std::vector<int32_t> positions;
  input.recent.last(rows, queries, positions);
  const auto blocks = key_blocks(input.head);
  input.backend.window_attention_mean(queries.data() + input.first_q_head * d, input.recent.row_floats(),
                                      positions.data(), rows, input.group, d,
                                      1.0f / std::sqrt(static_cast<float>(d)), blocks, scores.data());
}

void pool_scores(std::span<float> scores, int64_t kernel, PoolType type) {
  if (kernel <= 1 || scores.empty()) return;
  const auto n = static_cast<int64_t>(scores.size());
  const int64_t half = kernel / 2;
  std::vector<float> pooled(scores.size());
  for (int64_t t = 0; t < n; ++t) {
    const int64_t begin = std::max<int64_t>(0, t - half);
    const int64_t end = std::min(n, t - half + kernel);
    if (type == PoolType::kMax) {
      pooled[t] = *std::max_element(scores.begin() + begin, scores.begin() + end);
    } else {
      float sum = 0.0f;
      for (int64_t i = begin; i < end; ++i) sum += scores[i];
      pooled[t] = sum / static_cast<float>(kernel);
    }
  }
  std::copy(pooled.begin(), pooled.end(), scores.begin());
}

void protect_recent(std::span<float> scores, int64_t window) {
  const auto n = static_cast<int64_t>(scores.size());
  for (int64_t t = std::max<int64_t>(0, n - window); t < n; ++t) scores[t] = kAlwaysKeep;
}

}  // namespace kvshrink::kvstore
