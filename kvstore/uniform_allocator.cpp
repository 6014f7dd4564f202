#include "kvstore/uniform_allocator.h"

namespace kvshrink::kvstore {

std::vector<int64_t> UniformAllocator::head_budgets(const AllocationInput& input) const {
  std::vector<int64_t> budgets;
  budgets.reserve(input.scores.size());
  for (const auto& scores : input.scores) {
    const auto counts = count_head(scores);
    budgets.push_back(
        head_budget(counts, uniform_free_budget(counts, input.budget_tokens), input.budget_tokens));
  }
  return budgets;
}

}  // namespace kvshrink::kvstore
