#include "eval/haystack.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kvshrink::eval {
namespace {

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  std::string word;
  while (in >> word) words.push_back(word);
  return words;
}

bool has_alnum(const std::string& word) {
  return std::any_of(word.begin(), word.end(), [](unsigned char c) { return std::isalnum(c) != 0; });
}

// True if the word closes a sentence: "green." "again?" "(see above.)" "\"Licensor.\"".
bool ends_sentence(const std::string& word) {
  size_t end = word.size();
  while (end > 0 && (word[end - 1] == ')' || word[end - 1] == '"' || word[end - 1] == '\'')) --end;
  if (end == 0) return false;
  const char last = word[end - 1];
  return last == '.' || last == '?' || last == '!';
}

constexpr int64_t kMaxSentenceWords = 60;

}  // namespace

std::vector<std::string> essay_files(const std::string& dir) {
  // Distinct texts only: GPL, LGPL and GFDL are links to the newest version; GPL-1, LGPL-2 and
  // GFDL-1.2 are near-copies of later versions.
  static const char* const kNames[] = {"Apache-2.0", "Artistic", "BSD",    "CC0-1.0", "GFDL-1.3", "GPL-2",
                                       "GPL-3",      "LGPL-2.1", "LGPL-3", "MPL-1.1", "MPL-2.0"};
  std::vector<std::string> files;
  for (const char* name : kNames) {
    const std::filesystem::path path = std::filesystem::path(dir) / name;
    std::error_code error;
    if (std::filesystem::is_regular_file(path, error)) files.push_back(path.string());
  }
  return files;
}

std::vector<std::string> load_essay_words(const std::string& dir) {
  const std::vector<std::string> files = essay_files(dir);
  if (files.empty()) {
    throw std::runtime_error("essay haystack: no licence text found in " + dir +
                             " (Debian's base-files package installs GPL-3, Apache-2.0, ... there)");
  }
  std::vector<std::string> words;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("essay haystack: cannot read " + file);
    std::ostringstream text;
    text << in.rdbuf();
    for (std::string& word : split_words(text.str())) {
      if (has_alnum(word)) words.push_back(std::move(word));
    }
  }
  if (words.empty()) throw std::runtime_error("essay haystack: the licence texts in " + dir + " are empty");
  return words;
}

const std::vector<std::string>& haystack_source_words(HaystackKind kind) {
  if (kind == HaystackKind::kNoise) {
    static const std::vector<std::string> noise = split_words(kNoiseText);
    return noise;
  }
  static const std::vector<std::string> essay = load_essay_words();
  return essay;
}

std::vector<std::string> haystack_sentences(HaystackKind kind, int64_t num_words) {
  const std::vector<std::string>& source = haystack_source_words(kind);
  std::vector<std::string> sentences;
  std::string sentence;
  int64_t words_in_sentence = 0;
  for (int64_t i = 0; i < num_words; ++i) {
    const std::string& word = source[static_cast<size_t>(i) % source.size()];
    if (!sentence.empty()) sentence += ' ';
    sentence += word;
    ++words_in_sentence;
    if (ends_sentence(word) || words_in_sentence >= kMaxSentenceWords) {
      sentences.push_back(std::move(sentence));
      sentence.clear();
      words_in_sentence = 0;
    }
  }
  if (!sentence.empty()) sentences.push_back(std::move(sentence));
  return sentences;
}

std::string join_sentences(const std::vector<std::string>& sentences) {
  std::string text;
  for (const std::string& sentence : sentences) {
    if (!text.empty()) text += ' ';
    text += sentence;
  }
  return text;
}

int64_t fit_largest(int64_t budget, int64_t max_n, const std::function<int64_t(int64_t)>& tokens_of) {
  if (tokens_of(0) > budget) {
    throw std::runtime_error("synthetic task: " + std::to_string(budget) +
                             " tokens are too few for the fixed part of the prompt");
  }
  // Invariant: tokens_of(lo) <= budget; hi is over budget or hi == max_n (unchecked).
  int64_t lo = 0;
  int64_t hi = std::min<int64_t>(64, max_n);
  while (hi < max_n && tokens_of(hi) <= budget) {
    lo = hi;
    hi = std::min(hi * 2, max_n);
  }
  if (hi == max_n && tokens_of(hi) <= budget) return hi;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tokens_of(mid) <= budget) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

std::string haystack_text(HaystackKind kind, int64_t num_tokens, const TokenCounter& count_tokens) {
  auto tokens_of = [&](int64_t n) { return count_tokens(join_sentences(haystack_sentences(kind, n))); };
  const int64_t words = fit_largest(num_tokens, 64 * num_tokens + 1024, tokens_of);
  return join_sentences(haystack_sentences(kind, words));
}

}  // namespace kvshrink::eval
