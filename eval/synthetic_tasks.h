// Deterministic synthetic long-context tasks after RULER (NVIDIA/RULER, scripts/data/synthetic):
// the same arguments give the same sample on any machine (std::mt19937_64 and our own bounded
// draws and shuffles; no implementation-defined std distributions).
//
// Every sample is: context = task instruction + haystack with the inserted facts; question = "\n" +
// the RULER question; answer_prefix = RULER's answer prefix (without its leading space). The prompt
// `context + question` is fitted to at most context_length tokens (and close to it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/eval_sample.h"

namespace kvshrink::eval {

// passkey, niah_single_1..3, niah_multikey_1, niah_multivalue, niah_multiquery, niah_digits_6..10
// (niah_single_2 with an N-digit number), vt, cwe, fwe.
std::vector<std::string> synthetic_task_names();

// One sample of `task`. depth_percent in [0, 100] places the (first) needle for passkey and niah
// tasks; vt, cwe and fwe have no needle (their sample's depth_percent is -1). Throws
// std::invalid_argument for an unknown task (the message lists the valid names) or a depth
// outside [0, 100], std::runtime_error when context_length is too small for the task.
EvalSample make_synthetic_sample(const std::string& task, int64_t context_length, double depth_percent,
                                 uint64_t seed, const TokenCounter& count_tokens);

}  // namespace kvshrink::eval
