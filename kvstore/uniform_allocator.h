// Every head keeps the same number of tokens (SnapKV, H2O, StreamingLLM, KNorm, TOVA).
#pragma once

#include "kvstore/allocator.h"

namespace kvshrink::kvstore {

class UniformAllocator final : public Allocator {
 public:
  std::string_view name() const override { return "uniform"; }
  std::vector<int64_t> head_budgets(const AllocationInput& input) const override;
};

}  // namespace kvshrink::kvstore
