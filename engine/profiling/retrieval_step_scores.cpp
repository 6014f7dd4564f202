#include "engine/profiling/retrieval_step_scores.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvstore/window_scores.h"

namespace kvshrink::engine {

void add_retrieval_step_scores(const kvstore::KvStore& kv, int64_t group, std::array<int64_t, 2> needle,
                               kernels::Backend& backend, std::vector<double>& scores) {
  const int64_t d = kv.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t k_needle = needle[1] - needle[0];
  std::vector<float> query;         // [own q heads x head_dim], the newest query of a layer
  std::vector<int32_t> q_position;  // [1]
  std::vector<float> attention;     // [tokens of the head]
  std::vector<int32_t> order;       // token indexes, most attended first (top k)
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    const auto& recent = kv.recent_queries(layer);
    recent.last(1, query, q_position);
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      const auto& head = kv.head(layer, h);
      const auto blocks = kvstore::key_blocks(head);
      const std::vector<int32_t> positions = head.positions();
      const int64_t n = head.tokens();
      const int64_t k = std::min(k_needle, n);
      attention.resize(static_cast<size_t>(n));
      order.resize(static_cast<size_t>(n));
      double head_score = 0.0;
      for (int64_t j = 0; j < group; ++j) {
        backend.window_attention_mean(query.data() + (h * group + j) * d, recent.row_floats(),
                                      q_position.data(),
                                      /*n_queries=*/1, /*group=*/1, d, scale, blocks, attention.data());
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
          return attention[a] > attention[b] || (attention[a] == attention[b] && a < b);
        });
        double in_needle = 0.0;
        for (int64_t r = 0; r < k; ++r) {
          const int32_t t = order[static_cast<size_t>(r)];
          if (positions[t] >= needle[0] && positions[t] < needle[1]) in_needle += attention[t];
        }
        head_score += in_needle / static_cast<double>(k_needle);
      }
      scores[static_cast<size_t>(layer * kv.owned_kv_heads() + h)] += head_score / static_cast<double>(group);
    }
  }
}

}  // namespace kvshrink::engine
