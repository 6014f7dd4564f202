// KNorm (arXiv 2406.11430): keep low-norm keys (they draw high attention); score = -||k||.
// Needs no queries, so it also scores tokens produced during decode for free.
#pragma once

#include "kvstore/press.h"

namespace kvshrink::kvstore {

class KnormPress final : public Press {
 public:
  std::string_view name() const override { return "knorm"; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;
};

}  // namespace kvshrink::kvstore
