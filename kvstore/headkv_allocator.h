// HeadKV (arXiv 2410.19258): per-head budgets from an offline head-importance profile
// (`kvshrink profile-heads`), across all layers: every head keeps at least b - b/beta and the
// shared pool (b/beta) L H goes by normalised importance (kv-methods.md §6).
#pragma once

#include "kvstore/allocator.h"

namespace kvshrink::kvstore {

class HeadKvAllocator final : public Allocator {
 public:
  // importance [n_layers * n_heads], kv heads (query heads of a group already averaged), >= 0.
  HeadKvAllocator(std::vector<double> importance, double beta);
  std::string_view name() const override { return "headkv"; }
  std::vector<int64_t> head_budgets(const AllocationInput& input) const override;

 private:
  std::vector<double> importance_;
  double beta_;
};

}  // namespace kvshrink::kvstore
