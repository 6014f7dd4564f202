// The needle-in-a-haystack probes of `kvshrink profile-heads` (HeadKV-R2,
// shared/research/kv-methods.md §6) as tokens: the query-aware prompt, the reference answer that is
// teacher-forced after it, and where the needle sentence lies in the prompt.
//
// The probe text comes from a synthetic task generator (eval/synthetic_tasks.h, which the caller
// wires in as a NeedleTextMaker: engine/ does not depend on eval/).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::engine {

// Probe tasks, alternating over a (length, depth)'s samples: one needle, and one needle among three
// distractor needles with other keys (the retrieval has to pick the asked key: "reasoning").
inline constexpr std::array<const char*, 2> kNeedleProbeTasks = {"niah_single_2", "niah_multikey_1"};

// The probes to make: for every length, every depth, `samples` probes.
struct NeedleProbeSet {
  std::vector<int64_t> context_lengths;  // prompt lengths in tokens
  std::vector<double> depths;            // needle depths in percent
  int samples = 0;                       // per (length, depth), tasks alternating
  uint64_t seed = 0;
};

// One probe to make: the task's sample at this length, depth and seed.
struct NeedleRequest {
  const char* task = "";
  int64_t context_length = 0;
  double depth_percent = 0.0;
  uint64_t seed = 0;

  std::string label() const;  // "niah_single_2 len 1024 depth 50"
};

// A probe's text: the needle is "One of the special magic numbers for <key> is: <value>." in user.
struct NeedleText {
  std::string user;           // the user turn: context + question
  std::string answer_prefix;  // after the rendered ChatML prompt
  std::string value;          // the needle's value = the reference answer
};

using NeedleTextMaker = std::function<NeedleText(const NeedleRequest& request)>;

struct NeedleProbe {
  std::vector<TokenId> prompt;  // ChatML(user) + answer prefix
  std::vector<TokenId> answer;  // " <value>"
  // Token indexes [begin, end) of the needle sentence; = positions in a store that starts empty.
  std::array<int64_t, 2> needle = {0, 0};
  std::string label;  // NeedleRequest::label()
};

// The probes of `set` in order (length, then depth, then sample); probe i's seed is
// set.seed * 1000003 + i, so every probe has its own key, value and haystack.
std::vector<NeedleRequest> needle_requests(const NeedleProbeSet& set);

// The prompt as eval's query-aware encode() makes it, then " <value>" as the answer; the needle
// is every prompt token overlapping the needle sentence's bytes. Throws std::runtime_error when
// the prompt has no needle for the value, the tokens do not render back to the text, or the
// answer's first token merges with the prompt.
NeedleProbe make_needle_probe(const NeedleRequest& request, const NeedleText& text,
                              const Tokenizer& tokenizer);

// make_needle_probe of every request of `set`, its text from make_text.
std::vector<NeedleProbe> build_needle_probes(const NeedleProbeSet& set, const NeedleTextMaker& make_text,
                                             const Tokenizer& tokenizer);

}  // namespace kvshrink::engine
