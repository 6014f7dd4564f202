// KVzip (arXiv 2505.23416), query-agnostic: a token is worth keeping if the model needs it to
// reproduce the context. After the context's prefill the compressor prefills, on a scratch copy of
// the store, a short instruction to repeat the context followed by the context itself
// (engine/compression/context_reconstruction.h); a token's score is the largest attention any of
// those reconstruction queries and the group's query heads gives it, as in the paper. The first
// `sinks` positions are always kept. The cost: one more prefill of
// the context's length (plus the instruction), attending to twice the context, and a transient
// copy of the sequence's KV outside the pool.
#pragma once

#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

class KvzipPress final : public Press {
 public:
  explicit KvzipPress(const PressParams& params) : sinks_(params.sinks) {}
  std::string_view name() const override { return "kvzip"; }
  bool needs_reconstruction() const override { return true; }
  void score(const HeadScoringInput& input, std::span<float> scores) const override;

 private:
  int64_t sinks_;
};

}  // namespace kvshrink::kvstore
