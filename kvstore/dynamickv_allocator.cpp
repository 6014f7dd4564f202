#include "kvstore/dynamickv_allocator.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "kvstore/press.h"

namespace kvshrink::kvstore {

std::vector<int64_t> DynamicKvAllocator::head_budgets(const AllocationInput& input) const {
  const size_t n = input.scores.size();
  const auto n_heads = static_cast<size_t>(input.n_heads);
  std::vector<HeadCounts> counts(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    counts[i] = count_head(input.scores[i]);
    total += free_budget_share(counts[i], input.budget_tokens);
  }
  const double b = static_cast<double>(total) / static_cast<double>(n);
  // Candidates: each head's top C scores; the global top `total` of them count per layer.
  std::vector<float> offered;
  std::vector<int64_t> layer_of;
  std::vector<int64_t> layer_cap(static_cast<size_t>(input.n_layers), std::numeric_limits<int64_t>::max());
  for (size_t i = 0; i < n; ++i) {
    const int64_t layer = static_cast<int64_t>(i / n_heads);
    const auto cap = std::min<int64_t>(static_cast<int64_t>(std::floor(r_max_ * b)), counts[i].candidates);
    layer_cap[layer] = std::min(layer_cap[layer], cap);
    std::vector<float> candidates;
    for (float s : input.scores[i]) {
      if (s != kAlwaysKeep) candidates.push_back(s);
    }
    const auto c = static_cast<size_t>(std::min<int64_t>(cap, static_cast<int64_t>(candidates.size())));
    std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(c),
                      candidates.end(), std::greater<>());
    offered.insert(offered.end(), candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(c));
    layer_of.insert(layer_of.end(), c, layer);
  }
  std::vector<size_t> order(offered.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto top = static_cast<size_t>(std::min<int64_t>(total, static_cast<int64_t>(order.size())));
  std::nth_element(
      order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
      [&](size_t a, size_t c) { return offered[a] != offered[c] ? offered[a] > offered[c] : a < c; });
  std::vector<double> selected(static_cast<size_t>(input.n_layers), 0.0);
  for (size_t i = 0; i < top; ++i) selected[static_cast<size_t>(layer_of[order[i]])] += 1.0;
  // Layer sizes (per head) proportional to the selections, spending b per head on average.
  const auto layer_size = apportion(total / static_cast<int64_t>(n_heads), selected, layer_cap);
  std::vector<int64_t> budgets(n);
  for (size_t i = 0; i < n; ++i) {
    budgets[i] = head_budget(counts[i], layer_size[i / n_heads], input.budget_tokens);
  }
  return budgets;
}

}  // namespace kvshrink::kvstore
