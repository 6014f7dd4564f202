// The budgeted choice of a rank per token behind MixedDimKV and DynaKV (kv-methods.md §8-9): a
// multiple-choice knapsack. Item i (a token of some head) takes one option j (a rank, 0 meaning
// evicted) at loss losses[i * options + j] and cost option_costs[j]; minimise the total loss with the
// total cost within the budget. Solved by Lagrangian relaxation: for a multiplier mu every item takes
// argmin_j loss + mu * cost; mu is bisected to the smallest value whose choice fits, and the slack
// left is spent by upgrading the items whose choice changes at the boundary, best loss saved per
// cost first. Exact for the convex hull of each item's (cost, loss) points; the rest is greedy.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/kv_dtype.h"

namespace kvshrink::kvstore {

// Bytes of a token at rank r held as dtype elements: K and V coefficients plus its 4-byte position
// (0 at rank 0; rank head_dim costs what a full-dimension token does).
inline double rank_cost(int64_t rank, kernels::KvDtype dtype) {
  return rank == 0 ? 0.0 : static_cast<double>(2 * rank * kernels::kv_dtype_bytes(dtype) + 4);
}

// Option index per item. losses [items x options]: +infinity forbids an option (every item needs one
// finite option). Throws std::invalid_argument for bad shapes, negative or NaN losses, and
// std::range_error when the cheapest allowed option of every item already exceeds the budget.
std::vector<int32_t> choose_options(std::span<const float> losses, int64_t items,
                                    std::span<const double> option_costs, double budget);

}  // namespace kvshrink::kvstore
