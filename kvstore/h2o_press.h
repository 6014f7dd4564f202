// H2O (arXiv 2306.14048) as kvpress's ObservedAttention: the attention each token has received
// from every query so far (prefill column sums, then each decode step), divided by the number of
// queries that could see it, which removes the causal bias toward early tokens. The most recent
// `window` tokens are always kept. With decode-time compression it evicts as the cache grows.
#pragma once

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

class H2oPress final : public Press {
 public:
  explicit H2oPress(const PressParams& params) : window_(params.window) {}
  std::string_view name() const override { return "h2o"; }
  bool needs_attention_mass() const override { return true; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;

 private:
  int64_t window_;
};

}  // namespace kvshrink::kvstore
