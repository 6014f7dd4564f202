// Scoring metrics: RULER's string matching and LongBench's official per-dataset metrics
// (THUDM/LongBench metrics.py), reimplemented in C++. Every score is in [0, 1]; LongBench reports
// its scores x100 (mean over samples, times 100).
//
// Text is UTF-8. Python's Unicode-aware steps (lower(), \b, \d, split()) are matched exactly for
// ASCII text and approximated for other characters (see metrics.cpp).
// Out of scope: the Chinese variants (qa_f1_zh_score, rouge_zh_score, retrieval_zh_score), which
// need the jieba word segmenter.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvshrink::eval {

// RULER: fraction of the references found in the prediction (case-insensitive substring).
double string_match_all(std::string_view prediction, const std::vector<std::string>& references);
// RULER: 1 if any reference is found in the prediction (case-insensitive substring), else 0.
double string_match_part(std::string_view prediction, const std::vector<std::string>& references);

// LongBench metrics, one ground truth at a time (the caller takes the max over ground truths).

// SQuAD-style answer normalisation: lower case, drop ASCII punctuation, the articles a/an/the and
// extra whitespace.
std::string normalize_answer(std::string_view text);
// Token-level F1 between the normalised prediction and ground truth.
double qa_f1_score(std::string_view prediction, std::string_view ground_truth);
// ROUGE-L F-measure as the `rouge` package (pltrdy) computes "rouge-l" "f": summary-level LCS over
// sentences split at '.', words split at spaces, unique-word counting; 0 when either side is empty.
double rouge_score(std::string_view prediction, std::string_view ground_truth);
// LongBench classification_score (trec, lsht), including the official code's quirks.
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);
// Share of the numbers in the prediction equal to N, where the ground truth reads "Paragraph N".
double retrieval_score(std::string_view prediction, std::string_view ground_truth);
// Share of the numbers in the prediction equal to the ground truth.
double count_score(std::string_view prediction, std::string_view ground_truth);
// fuzzywuzzy fuzz.ratio / 100 between the first code-looking line of the prediction and the
// ground truth.
double code_sim_score(std::string_view prediction, std::string_view ground_truth);

// Indel similarity 1 - indel_distance / (len_a + len_b) over Unicode code points (python-Levenshtein
// ratio); 1 for two empty strings.
double levenshtein_ratio(std::string_view a, std::string_view b);

}  // namespace kvshrink::eval
