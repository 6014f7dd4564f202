// LongBench (THUDM/LongBench, v1) records as evaluation samples: the official JSONL files, prompt
// templates (config/dataset2prompt.json), generation lengths (config/dataset2maxlen.json), metrics
// (eval.py dataset2metric), middle truncation (pred.py) and prediction post-processing (eval.py).
// English datasets only; the Chinese ones need metrics that are out of scope (see metrics.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "eval/eval_sample.h"

namespace kvshrink::eval {

struct LongBenchDataset {
  std::string name;             // e.g. "qasper"
  std::string prompt_template;  // official template with {context} and {input}
  int max_new_tokens = 0;       // dataset2maxlen
  Metric metric = Metric::kQaF1;
  bool chat_template = true;  // pred.py skips the chat template for trec, triviaqa, samsum, lcc, repobench-p
  bool first_line_only = false;  // eval.py keeps only the first line of trec, triviaqa, samsum predictions
};

// The English datasets, in the official order.
const std::vector<LongBenchDataset>& longbench_datasets();
// One dataset's settings; a LongBench-E name ("qasper_e") maps to its base dataset. Throws
// std::runtime_error for an unknown or unsupported dataset.
const LongBenchDataset& longbench_dataset(std::string_view name);

// Reads <folder>/<dataset>.jsonl (fields: input, context, answers, length, dataset, language,
// all_classes, _id) into samples, at most max_samples of them (0 = all). The filled template is split
// at {context}: sample.context = template text before {context} + record context; sample.question =
// the rest of the template with {input} filled in. So context + question is exactly the official
// prompt. task = "longbench/<dataset>". Throws std::runtime_error naming file and line on a missing
// file, unknown dataset or malformed record.
std::vector<EvalSample> read_longbench(const std::filesystem::path& folder, const std::string& dataset,
                                       size_t max_samples = 0);

// pred.py's truncation: when tokens exceed max_tokens, keep the first and the last max_tokens / 2
// tokens (integer half, so an odd limit keeps max_tokens - 1). Throws std::invalid_argument for
// max_tokens < 2 (the Python slice tokens[-0:] would keep everything).
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& tokens, size_t max_tokens);

// eval.py's post-processing: for trec, triviaqa, samsum and lsht, prediction.lstrip('\n') up to the
// first '\n'; other datasets unchanged. `dataset` may carry the "longbench/" prefix or "_e" suffix.
std::string longbench_postprocess(std::string_view dataset, std::string_view prediction);

}  // namespace kvshrink::eval
