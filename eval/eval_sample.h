// One evaluation sample: a long context, a question about it, the reference answers and how a
// prediction is scored. Synthetic tasks (RULER-style) and LongBench records both become samples.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvshrink::eval {

// RULER's scores: string_match_all = fraction of the answers found in the prediction (case-
// insensitive); string_match_part = 1 if any answer is found. LongBench metrics are per dataset.
enum class Metric {
  kStringMatchAll,
  kStringMatchPart,
  kQaF1,
  kRougeL,
  kClassification,
  kRetrieval,
  kCount,
  kCodeSimilarity,
};

struct EvalSample {
  std::string task;                      // e.g. "niah_single_1", "passkey", "longbench/qasper"
  int64_t context_length = 0;            // requested prompt length in tokens (0 = as given)
  double depth_percent = -1.0;           // where the needle sits in the context, -1 if no needle
  std::string context;                   // the long part, which a press compresses
  std::string question;                  // asked after it: the user turn is exactly context + question
  std::string answer_prefix;             // text the answer starts with (placed after the assistant turn)
  std::vector<std::string> answers;      // reference answers
  std::vector<std::string> all_classes;  // LongBench classification labels, else empty
  Metric metric = Metric::kStringMatchAll;
  int max_new_tokens = 32;
};

// Number of tokens of a text under the model's tokenizer (generators fit haystacks with it).
using TokenCounter = std::function<int64_t(std::string_view)>;

// Score in [0, 1] of a prediction for a sample, by its metric.
double score(const EvalSample& sample, std::string_view prediction);

}  // namespace kvshrink::eval
