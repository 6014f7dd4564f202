// StreamingLLM (arXiv 2309.17453): the first `sinks` tokens plus the most recent ones. Scores are
// the positions (recent = high) with the sinks always kept, so a budget of B keeps sinks + the
// last B - sinks tokens; with decode-time compression every step it is the paper's ring cache.
// Tokens keep their original positions (no re-rotation), so it does not extend the context.
#pragma once

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

class StreamingLlmPress final : public Press {
 public:
  explicit StreamingLlmPress(const PressParams& params) : sinks_(params.sinks) {}
  std::string_view name() const override { return "streamingllm"; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;

 private:
  int64_t sinks_;
};

}  // namespace kvshrink::kvstore
