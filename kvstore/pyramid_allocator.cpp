#include "kvstore/pyramid_allocator.h"

#include <numeric>

namespace kvshrink::kvstore {

// Per head with b free (non-window) tokens and c candidates:
//   min = b / beta, max = 2b - min; if max >= c: max = c, min = 2b - max
//   layer l weight = max - l (max - min) / (L - 1)
// and the whole free budget is apportioned by those weights (so it is spent exactly).
std::vector<int64_t> PyramidAllocator::head_budgets(const AllocationInput& input) const {
  const size_t n = input.scores.size();
  std::vector<HeadCounts> counts(n);
  std::vector<double> weights(n);
  std::vector<int64_t> caps(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    counts[i] = count_head(input.scores[i]);
    const int64_t layer = static_cast<int64_t>(i) / input.n_heads;
    const auto b = static_cast<double>(uniform_free_budget(counts[i], input.budget_tokens));
    const auto c = static_cast<double>(counts[i].candidates);
    double min_num = b / beta_;
    double max_num = 2 * b - min_num;
    if (max_num >= c) {
      max_num = c;
      min_num = 2 * b - max_num;
    }
    const double step =
        input.n_layers > 1 ? (max_num - min_num) / static_cast<double>(input.n_layers - 1) : 0.0;
    weights[i] = max_num - static_cast<double>(layer) * step;
    caps[i] = counts[i].candidates;
    total += free_budget_share(counts[i], input.budget_tokens);
  }
  const auto free_tokens = apportion(total, weights, caps);
  std::vector<int64_t> budgets(n);
  for (size_t i = 0; i < n; ++i) budgets[i] = head_budget(counts[i], free_tokens[i], input.budget_tokens);
  return budgets;
}

}  // namespace kvshrink::kvstore
