// TOVA (arXiv 2401.06104): the attention of the last query to each token, averaged over all heads
// of the layer (the coordinator averages across heads, so every head keeps the same tokens); the
// last token is always kept.
#pragma once

#include "kvstore/press.h"

namespace kvshrink::kvstore {

class TovaPress final : public Press {
 public:
  std::string_view name() const override { return "tova"; }
  int64_t query_window() const override { return 1; }
  bool shares_selection_across_heads() const override { return true; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;
};

}  // namespace kvshrink::kvstore
