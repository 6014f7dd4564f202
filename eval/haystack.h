// Haystack text for synthetic long-context tasks, and the fitting of generated text to a token
// budget. Two kinds, as RULER:
//   noise: "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
//          repeated;
//   essay: natural English prose, read at run time from the licence texts that Debian's base-files
//          package installs in /usr/share/common-licenses (nothing is fetched or copied into the repo).
// A haystack is a sequence of words (the source repeated as often as needed), grouped into sentences.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/eval_sample.h"

namespace kvshrink::eval {

enum class HaystackKind { kNoise, kEssay };

inline constexpr const char* kNoiseText =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
inline constexpr const char* kLicenceDir = "/usr/share/common-licenses";

// The licence files the essay haystack is made of, in this fixed order, those present in `dir`.
std::vector<std::string> essay_files(const std::string& dir = kLicenceDir);

// Words of the essay: the essay files concatenated, split on whitespace, words made only of
// punctuation (rules such as "-----") dropped. Throws std::runtime_error if no file is present.
std::vector<std::string> load_essay_words(const std::string& dir = kLicenceDir);

// Words of a haystack's source text (the essay is read once per process and cached).
const std::vector<std::string>& haystack_source_words(HaystackKind kind);

// The first `num_words` words of the haystack grouped into sentences (each a space-joined string).
// A sentence ends after a word ending in '.', '?' or '!' (or a closing quote/bracket after one),
// or after 60 words; the last sentence may be cut short.
std::vector<std::string> haystack_sentences(HaystackKind kind, int64_t num_words);

// Sentences joined with single spaces.
std::string join_sentences(const std::vector<std::string>& sentences);

// Largest n in [0, max_n] with tokens_of(n) <= budget, assuming tokens_of grows with n.
// Doubling then bisection: O(log n) calls of tokens_of. Throws std::runtime_error when even
// tokens_of(0) is over budget.
int64_t fit_largest(int64_t budget, int64_t max_n, const std::function<int64_t(int64_t)>& tokens_of);

// The longest haystack text (whole words) of at most `num_tokens` tokens under `count_tokens`.
std::string haystack_text(HaystackKind kind, int64_t num_tokens, const TokenCounter& count_tokens);

}  // namespace kvshrink::eval
