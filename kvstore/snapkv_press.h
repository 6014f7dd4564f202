// SnapKV (arXiv 2404.14469): the attention the observation window (last w queries) gives each
// token, averaged over the window and the query group, smoothed by 1-D pooling; the window itself
// is always kept. The scorer behind PyramidKV, AdaKV, HeadKV and DynamicKV too.
#pragma once

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

class SnapKvPress final : public Press {
 public:
  explicit SnapKvPress(const PressParams& params) : params_(params) {}
  std::string_view name() const override { return "snapkv"; }
  int64_t query_window() const override { return params_.window; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;

 private:
  PressParams params_;
};

}  // namespace kvshrink::kvstore
