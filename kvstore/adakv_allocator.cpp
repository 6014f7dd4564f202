#include "kvstore/adakv_allocator.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "kvstore/press.h"

namespace kvshrink::kvstore {

std::vector<int64_t> AdaKvAllocator::head_budgets(const AllocationInput& input) const {
  const auto n_heads = static_cast<size_t>(input.n_heads);
  std::vector<int64_t> budgets(input.scores.size());
  for (int64_t layer = 0; layer < input.n_layers; ++layer) {
    const size_t first = static_cast<size_t>(layer) * n_heads;
    std::vector<HeadCounts> counts(n_heads);
    std::vector<int64_t> uniform(n_heads), caps(n_heads);
    std::vector<std::tuple<float, int32_t, size_t>> entries;  // (score, token, head) of every candidate
    int64_t layer_total = 0;
    for (size_t h = 0; h < n_heads; ++h) {
      const auto& scores = input.scores[first + h];
      counts[h] = count_head(scores);
      uniform[h] = uniform_free_budget(counts[h], input.budget_tokens);
      caps[h] = counts[h].candidates;
      layer_total += free_budget_share(counts[h], input.budget_tokens);
      for (size_t t = 0; t < scores.size(); ++t) {
        if (scores[t] != kAlwaysKeep) entries.emplace_back(scores[t], static_cast<int32_t>(t), h);
      }
    }
    // c_h = how many of the layer's top layer_total candidates are in head h
    const auto top =
        static_cast<size_t>(std::min<int64_t>(layer_total, static_cast<int64_t>(entries.size())));
    std::nth_element(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(top), entries.end(),
                     [](const auto& a, const auto& b) { return a > b; });
    std::vector<double> weights(n_heads, 0.0);
    for (size_t i = 0; i < top; ++i) weights[std::get<2>(entries[i])] += 1.0;
    for (size_t h = 0; h < n_heads; ++h) {
      weights[h] = weights[h] * (1.0 - alpha_) + alpha_ * static_cast<double>(uniform[h]);
    }
    const auto free_tokens = apportion(layer_total, weights, caps);
    for (size_t h = 0; h < n_heads; ++h) {
      budgets[first + h] = head_budget(counts[h], free_tokens[h], input.budget_tokens);
    }
  }
  return budgets;
}

}  // namespace kvshrink::kvstore
