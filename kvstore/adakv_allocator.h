// AdaKV (arXiv 2407.11550): inside each layer the heads compete for the layer's budget: the
// layer's top scores across all its heads decide each head's share c_h, and a floor alpha keeps
// b_h = c_h (1 - alpha) + alpha b (kv-methods.md §5). Budget moves across heads, never layers.
#pragma once

#include "kvstore/allocator.h"

namespace kvshrink::kvstore {

class AdaKvAllocator final : public Allocator {
 public:
  explicit AdaKvAllocator(double alpha) : alpha_(alpha) {}
  std::string_view name() const override { return "adakv"; }
  std::vector<int64_t> head_budgets(const AllocationInput& input) const override;

 private:
  double alpha_;
};

}  // namespace kvshrink::kvstore
