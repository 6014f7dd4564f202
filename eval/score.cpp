// score(): a sample's metric applied to a prediction. RULER metrics take all references at once;
// LongBench metrics score each ground truth and keep the best (eval.py), after eval.py's first-line
// post-processing for trec, triviaqa, samsum and lsht (samples whose task is "longbench/<dataset>").
#include <algorithm>
#include <stdexcept>
#include <string>

#include "eval/eval_sample.h"
#include "eval/longbench.h"
#include "eval/metrics.h"

namespace kvshrink::eval {
namespace {

double score_one(const EvalSample& sample, std::string_view prediction, std::string_view truth) {
  switch (sample.metric) {
    case Metric::kQaF1:
      return qa_f1_score(prediction, truth);
    case Metric::kRougeL:
      return rouge_score(prediction, truth);
    case Metric::kClassification:
      return classification_score(prediction, truth, sample.all_classes);
    case Metric::kRetrieval:
      return retrieval_score(prediction, truth);
    case Metric::kCount:
      return count_score(prediction, truth);
    case Metric::kCodeSimilarity:
      return code_sim_score(prediction, truth);
    default:
      throw std::logic_error("eval::score: not a per-answer metric");
  }
}

}  // namespace

double score(const EvalSample& sample, std::string_view prediction) {
  switch (sample.metric) {
    case Metric::kStringMatchAll:
      return string_match_all(prediction, sample.answers);
    case Metric::kStringMatchPart:
      return string_match_part(prediction, sample.answers);
    default:
      break;
  }
  std::string processed(prediction);
  if (sample.task.rfind("longbench/", 0) == 0) processed = longbench_postprocess(sample.task, prediction);
  double best = 0.0;
  for (const auto& truth : sample.answers) best = std::max(best, score_one(sample, processed, truth));
  return best;
}

}  // namespace kvshrink::eval
