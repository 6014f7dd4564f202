// DynamicKV (arXiv 2412.14838): layer budgets from the scores themselves. Each head offers its
// top C = min(r_max b, candidates) tokens; the global top b L H of those, compared in raw units
// across layers, decide each layer's share; all heads of a layer keep that layer's size
// (kv-methods.md §7, its final re-balancing round, run once after prefill as in §11.2).
#pragma once

#include "kvstore/allocator.h"

namespace kvshrink::kvstore {

class DynamicKvAllocator final : public Allocator {
 public:
  explicit DynamicKvAllocator(double r_max) : r_max_(r_max) {}
  std::string_view name() const override { return "dynamickv"; }
  std::vector<int64_t> head_budgets(const AllocationInput& input) const override;

 private:
  double r_max_;
};

}  // namespace kvshrink::kvstore
