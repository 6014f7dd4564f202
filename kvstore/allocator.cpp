#include "kvstore/allocator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "kvstore/press.h"

namespace kvshrink::kvstore {

std::vector<std::vector<int32_t>> select_top(std::span<const std::vector<float>> scores,
                                             std::span<const int64_t> budgets) {
  if (scores.size() != budgets.size()) throw std::invalid_argument("select_top: one budget per head");
  std::vector<std::vector<int32_t>> kept(scores.size());
  for (size_t h = 0; h < scores.size(); ++h) {
    const auto& s = scores[h];
    const auto n = static_cast<int64_t>(s.size());
    const int64_t keep = std::clamp<int64_t>(budgets[h], 0, n);
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    if (keep < n) {
      std::nth_element(order.begin(), order.begin() + keep, order.end(),
                       [&](int32_t a, int32_t b) { return s[a] != s[b] ? s[a] > s[b] : a > b; });
      order.resize(static_cast<size_t>(keep));
    }
    std::sort(order.begin(), order.end());
    kept[h] = std::move(order);
  }
  return kept;
}

void chunk_scores(std::vector<float>& scores, int64_t chunk_size) {
  if (chunk_size < 1) throw std::invalid_argument("chunk_scores: chunk size must be >= 1");
  if (chunk_size == 1) return;
  const auto n = static_cast<int64_t>(scores.size());
  for (int64_t begin = 0; begin < n; begin += chunk_size) {
    const int64_t end = std::min(n, begin + chunk_size);
    double sum = 0.0;
    int64_t candidates = 0;
    for (int64_t t = begin; t < end; ++t) {
      if (scores[t] != kAlwaysKeep) sum += scores[t], ++candidates;
    }
    if (candidates == 0) continue;
    const auto mean = static_cast<float>(sum / static_cast<double>(candidates));
    for (int64_t t = begin; t < end; ++t) {
      if (scores[t] != kAlwaysKeep) scores[t] = mean;
    }
  }
}

std::vector<int64_t> apportion(int64_t total, std::span<const double> weights,
                               std::span<const int64_t> caps) {
  const size_t n = weights.size();
  if (caps.size() != n) throw std::invalid_argument("apportion: one cap per weight");
  std::vector<int64_t> parts(n, 0);
  const int64_t cap_sum = std::accumulate(caps.begin(), caps.end(), int64_t{0});
  if (total >= cap_sum) return {caps.begin(), caps.end()};
  if (total <= 0) return parts;
  // Water-filling in real numbers: parts that would pass their cap are fixed at it.
  std::vector<double> share(n, 0.0);
  std::vector<bool> fixed(n, false);
  double remaining = static_cast<double>(total);
  for (size_t i = 0; i < n; ++i) {
    if (caps[i] <= 0) fixed[i] = true;
  }
  // Each round shares the remainder among the free parts; those at or over their cap are fixed
  // there (the share per unit weight only grows as parts leave, so they stay over).
  for (bool changed = true; changed;) {
    changed = false;
    double weight_sum = 0.0;
    size_t active = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!fixed[i]) weight_sum += std::max(0.0, weights[i]), ++active;
    }
    if (active == 0) break;
    for (size_t i = 0; i < n; ++i) {
      if (fixed[i]) continue;
      const double w =
          weight_sum > 0.0 ? std::max(0.0, weights[i]) / weight_sum : 1.0 / static_cast<double>(active);
      share[i] = remaining * w;
    }
    for (size_t i = 0; i < n; ++i) {
      if (!fixed[i] && share[i] >= static_cast<double>(caps[i])) {
        share[i] = static_cast<double>(caps[i]);
        fixed[i] = true;
        remaining -= share[i];
        changed = true;
      }
    }
  }
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    parts[i] = std::min(caps[i], static_cast<int64_t>(std::floor(share[i])));
    given += parts[i];
  }
  // Largest remainders first (ties: lower index) until the total is met.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return share[a] - std::floor(share[a]) > share[b] - std::floor(share[b]);
  });
  for (size_t pass = 0; given < total && pass < 2; ++pass) {
    for (size_t i : order) {
      if (given == total) break;
      if (parts[i] < caps[i]) ++parts[i], ++given;
    }
  }
  return parts;
}

HeadCounts count_head(const std::vector<float>& scores) {
  HeadCounts counts;
  for (float s : scores) {
    if (s == kAlwaysKeep) ++counts.always_kept;
  }
  counts.candidates = static_cast<int64_t>(scores.size()) - counts.always_kept;
  return counts;
}

int64_t uniform_free_budget(const HeadCounts& counts, int64_t budget_tokens) {
  return std::clamp<int64_t>(budget_tokens - counts.always_kept, 0, counts.candidates);
}

int64_t free_budget_share(const HeadCounts& counts, int64_t budget_tokens) {
  return std::max<int64_t>(0, budget_tokens - counts.always_kept);
}

int64_t head_budget(const HeadCounts& counts, int64_t free_tokens, int64_t budget_tokens) {
  if (budget_tokens < counts.always_kept) return budget_tokens;
  return counts.always_kept + std::clamp<int64_t>(free_tokens, 0, counts.candidates);
}

}  // namespace kvshrink::kvstore
