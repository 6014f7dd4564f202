#include "kvstore/rank_allocation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace kvshrink::kvstore {
namespace {

struct Choice {
  std::vector<int32_t> option;
  double cost = 0.0;
};

// Every item's argmin of loss + mu * cost (ties: the cheaper option).
Choice choose_at(std::span<const float> losses, int64_t items, std::span<const double> costs, double mu) {
  const auto n_options = static_cast<int64_t>(costs.size());
  Choice c{std::vector<int32_t>(static_cast<size_t>(items)), 0.0};
  for (int64_t i = 0; i < items; ++i) {
    const float* loss = losses.data() + i * n_options;
    int32_t best = -1;
    double best_value = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n_options; ++j) {
      if (std::isinf(loss[j])) continue;
      const double value = static_cast<double>(loss[j]) + mu * costs[static_cast<size_t>(j)];
      if (best < 0 || value < best_value ||
          (value == best_value && costs[static_cast<size_t>(j)] < costs[static_cast<size_t>(best)])) {
        best = static_cast<int32_t>(j);
        best_value = value;
      }
    }
    c.option[static_cast<size_t>(i)] = best;
    c.cost += costs[static_cast<size_t>(best)];
  }
  return c;
}

}  // namespace

std::vector<int32_t> choose_options(std::span<const float> losses, int64_t items,
                                    std::span<const double> option_costs, double budget) {
  const auto n_options = static_cast<int64_t>(option_costs.size());
  if (n_options == 0 || losses.size() != static_cast<size_t>(items * n_options)) {
    throw std::invalid_argument(fmt::format("choose_options: {} losses for {} items x {} options", losses.size(),
                                            items, n_options));
  }
  double cheapest_total = 0.0;
  for (int64_t i = 0; i < items; ++i) {
    double cheapest = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n_options; ++j) {
      const float loss = losses[static_cast<size_t>(i * n_options + j)];
      if (std::isnan(loss) || loss < 0.0f) throw std::invalid_argument("choose_options: a loss is negative or NaN");
      if (!std::isinf(loss)) cheapest = std::min(cheapest, option_costs[static_cast<size_t>(j)]);
    }
    if (std::isinf(cheapest)) throw std::invalid_argument("choose_options: an item has no allowed option");
    cheapest_total += cheapest;
  }
  if (cheapest_total > budget) {
    throw std::range_error(
        fmt::format("the budget ({:.0f} words) is below the cheapest choice the candidate set allows ({:.0f})",
                    budget, cheapest_total));
  }
  Choice high = choose_at(losses, items, option_costs, 0.0);
  if (high.cost <= budget) return high.option;
  // Bracket: mu_low does not fit, mu_high does.
  double mu_low = 0.0;
  double mu_high = 1.0;
  for (high = choose_at(losses, items, option_costs, mu_high); high.cost > budget;
       high = choose_at(losses, items, option_costs, mu_high)) {
    mu_low = mu_high;
    mu_high *= 4.0;
    if (mu_high > 1e30) throw std::logic_error("choose_options: no multiplier fits the budget");
  }
  for (int iteration = 0; iteration < 60 && mu_high - mu_low > 1e-12 * mu_high; ++iteration) {
    const double mu = 0.5 * (mu_low + mu_high);
    Choice c = choose_at(losses, items, option_costs, mu);
    if (c.cost <= budget) {
      mu_high = mu;
      high = std::move(c);
    } else {
      mu_low = mu;
    }
  }
  // Spend the slack: items whose choice at mu_low is dearer, best loss saved per added cost first.
  const Choice low = choose_at(losses, items, option_costs, mu_low);
  struct Upgrade {
    int64_t item;
    double saving_per_cost;
  };
  std::vector<Upgrade> upgrades;
  for (int64_t i = 0; i < items; ++i) {
    const auto a = high.option[static_cast<size_t>(i)];
    const auto b = low.option[static_cast<size_t>(i)];
    const double extra = option_costs[static_cast<size_t>(b)] - option_costs[static_cast<size_t>(a)];
    if (a == b || extra <= 0.0) continue;
    const double saving = static_cast<double>(losses[static_cast<size_t>(i * n_options + a)]) -
                          losses[static_cast<size_t>(i * n_options + b)];
    upgrades.push_back({i, saving / extra});
  }
  std::stable_sort(upgrades.begin(), upgrades.end(),
                   [](const Upgrade& x, const Upgrade& y) { return x.saving_per_cost > y.saving_per_cost; });
  double cost = high.cost;
  for (const auto& u : upgrades) {
    const auto i = static_cast<size_t>(u.item);
    const double extra = option_costs[static_cast<size_t>(low.option[i])] - option_costs[static_cast<size_t>(high.option[i])];
    if (cost + extra > budget) continue;
    cost += extra;
    high.option[i] = low.option[i];
  }
  return high.option;
}

}  // namespace kvshrink::kvstore
