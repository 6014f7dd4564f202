// PyramidKV (arXiv 2406.02069): layer budgets fall linearly with depth, from about 2b at the
// bottom to b / beta at the top, averaging the uniform budget b (kv-methods.md §3).
#pragma once

#include "kvstore/allocator.h"

namespace kvshrink::kvstore {

class PyramidAllocator final : public Allocator {
 public:
  explicit PyramidAllocator(double beta) : beta_(beta) {}
  std::string_view name() const override { return "pyramid"; }
  std::vector<int64_t> head_budgets(const AllocationInput& input) const override;

 private:
  double beta_;
};

}  // namespace kvshrink::kvstore
