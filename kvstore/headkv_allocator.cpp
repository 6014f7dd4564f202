#include "kvstore/headkv_allocator.h"

#include <fmt/format.h>

#include <cmath>
#include <numeric>
#include <stdexcept>

namespace kvshrink::kvstore {

HeadKvAllocator::HeadKvAllocator(std::vector<double> importance, double beta)
    : importance_(std::move(importance)), beta_(beta) {
  const double sum = std::accumulate(importance_.begin(), importance_.end(), 0.0);
  if (!(sum > 0.0)) throw std::invalid_argument("headkv: the head profile is all zero");
  for (auto& s : importance_) {
    if (!(s >= 0.0)) throw std::invalid_argument("headkv: negative or NaN head importance");
    s /= sum;
  }
}

std::vector<int64_t> HeadKvAllocator::head_budgets(const AllocationInput& input) const {
  const size_t n = input.scores.size();
  if (importance_.size() != n) {
    throw std::invalid_argument(
        fmt::format("headkv: the head profile has {} heads, the model {}", importance_.size(), n));
  }
  std::vector<HeadCounts> counts(n);
  std::vector<int64_t> caps(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    counts[i] = count_head(input.scores[i]);
    caps[i] = counts[i].candidates;
    total += free_budget_share(counts[i], input.budget_tokens);
  }
  // b_{l,h} = s~ * pool + (b - b/beta), pool = (b/beta) L H, b the mean free budget
  const double b = static_cast<double>(total) / static_cast<double>(n);
  const double pool = std::floor(b / beta_) * static_cast<double>(n);
  std::vector<double> weights(n);
  for (size_t i = 0; i < n; ++i) weights[i] = importance_[i] * pool + (b - std::floor(b / beta_));
  const auto free_tokens = apportion(total, weights, caps);
  std::vector<int64_t> budgets(n);
  for (size_t i = 0; i < n; ++i) budgets[i] = head_budget(counts[i], free_tokens[i], input.budget_tokens);
  return budgets;
}

}  // namespace kvshrink::kvstore
