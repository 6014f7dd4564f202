// RULER and LongBench metrics. Each LongBench function follows the official metrics.py step by
// step; the comments name the Python step each part reproduces.
#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>

#include "engine/tokenizer/utf8.h"

namespace kvshrink::eval {
namespace {

using engine::utf8::encode;

// ---- UTF-8 and the parts of Python's str semantics the metrics rely on ----

// Decodes UTF-8 into code points; a byte that does not start a valid sequence stands for itself.
std::u32string decode(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    size_t length = byte < 0x80           ? 1
                    : (byte >> 5) == 0x6  ? 2
                    : (byte >> 4) == 0xE  ? 3
                    : (byte >> 3) == 0x1E ? 4
                                          : 0;
    char32_t cp = length == 1   ? byte
                  : length == 2 ? (byte & 0x1F)
                  : length == 3 ? (byte & 0x0F)
                                : (byte & 0x07);
    bool valid = length > 0 && i + length <= text.size();
    for (size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      cp = (cp << 6) | (next & 0x3F);
    }
    if (!valid) {
      out.push_back(byte);
      ++i;
    } else {
      out.push_back(cp);
      i += length;
    }
  }
  return out;
}

// Python str.isspace(), exact.
bool is_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Python str.lower(): exact for ASCII, Latin-1, basic Greek and Cyrillic; other letters unchanged.
char32_t to_lower(char32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) return cp + 32;
  if (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2) return cp + 32;
  if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
  if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
  return cp;
}

std::u32string lower(std::u32string text) {
  for (char32_t& cp : text) cp = to_lower(cp);
  return text;
}

// Python string.punctuation: the 32 ASCII punctuation characters.
bool is_ascii_punct(char32_t cp) {
  return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
         (cp >= 0x7B && cp <= 0x7E);
}

// A regex \w character: exact for ASCII; beyond ASCII every character but whitespace and the common
// punctuation and symbol blocks counts as a letter.
bool is_word(char32_t cp) {
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == '_';
  if (is_space(cp)) return false;
  if (cp >= 0x80 && cp <= 0xBF)  // Latin-1 symbols, except ª ² ³ µ ¹ º ¼ ½ ¾
    return cp == 0xAA || cp == 0xB2 || cp == 0xB3 || cp == 0xB5 || cp == 0xB9 || cp == 0xBA ||
           (cp >= 0xBC && cp <= 0xBE);
  if (cp == 0xD7 || cp == 0xF7) return false;  // × ÷
  if (cp >= 0x2000 && cp <= 0x2BFF)
    return cp >= 0x2070 && cp <= 0x209F;           // punctuation, symbols; super/subscripts are \w
  if (cp >= 0x3000 && cp <= 0x303F) return false;  // CJK punctuation
  if (cp >= 0xFF00 && cp <= 0xFF65)                // fullwidth forms: digits and letters are word characters
    return (cp >= 0xFF10 && cp <= 0xFF19) || (cp >= 0xFF21 && cp <= 0xFF3A) || (cp >= 0xFF41 && cp <= 0xFF5A);
  return true;
}

// Python str.split() with no argument: runs of whitespace separate, no empty pieces.
std::vector<std::u32string> split_whitespace(std::u32string_view text) {
  std::vector<std::u32string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

// " ".join(text.split())
std::u32string collapse_whitespace(std::u32string_view text) {
  std::u32string out;
  for (const auto& word : split_whitespace(text)) {
    if (!out.empty()) out.push_back(U' ');
    out += word;
  }
  return out;
}

bool is_ascii_digit(char c) {
  return c >= '0' && c <= '9';
}

// re.findall(r"\d+", text) for ASCII digits.
std::vector<std::string> find_numbers(std::string_view text) {
  std::vector<std::string> numbers;
  size_t i = 0;
  while (i < text.size()) {
    if (!is_ascii_digit(text[i])) {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < text.size() && is_ascii_digit(text[i])) ++i;
    numbers.emplace_back(text.substr(start, i - start));
  }
  return numbers;
}

// Share of `numbers` equal to `target` (string comparison, as str(number) == str(target)).
double share_equal(const std::vector<std::string>& numbers, std::string_view target) {
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), target);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Longest common subsequence length of two sequences, two DP rows.
template <typename Seq>
size_t lcs_length(const Seq& a, const Seq& b) {
  std::vector<size_t> previous(b.size() + 1, 0), current(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      current[j] = a[i - 1] == b[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

// ---- ROUGE-L as pltrdy/rouge computes it ----

using Words = std::vector<std::string>;

// Rouge._get_scores: text.split(".") keeping non-empty pieces, each " ".join(piece.split()).
// rouge_score._split_into_words then splits each sentence at single spaces ("" gives [""]).
std::vector<Words> rouge_sentences(std::string_view text) {
  std::vector<Words> sentences;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('.', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view piece = text.substr(start, end - start);
    if (!piece.empty()) {
      Words words;
      for (const auto& word : split_whitespace(decode(piece))) words.push_back(encode(word));
      if (words.empty()) words.emplace_back();  // "".split(" ") == [""]
      sentences.push_back(std::move(words));
    }
    start = end + 1;
  }
  return sentences;
}

// rouge_score._recon_lcs(x, y): the words of one LCS of x and y, with the package's tie-breaking.
void add_lcs_words(const Words& x, const Words& y, std::set<std::string>& out) {
  const size_t columns = y.size() + 1;
  std::vector<uint32_t> table((x.size() + 1) * columns, 0);
  for (size_t i = 1; i <= x.size(); ++i)
    for (size_t j = 1; j <= y.size(); ++j)
      table[i * columns + j] = x[i - 1] == y[j - 1]
                                   ? table[(i - 1) * columns + j - 1] + 1
                                   : std::max(table[(i - 1) * columns + j], table[i * columns + j - 1]);
  size_t i = x.size(), j = y.size();
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (table[(i - 1) * columns + j] > table[i * columns + j - 1]) {
      --i;
    } else {
      --j;
    }
  }
}

size_t unique_words(const std::vector<Words>& sentences) {
  std::set<std::string> words;
  for (const auto& sentence : sentences) words.insert(sentence.begin(), sentence.end());
  return words.size();
}

}  // namespace

double string_match_all(std::string_view prediction, const std::vector<std::string>& references) {
  if (references.empty()) return 0.0;
  const std::u32string text = lower(decode(prediction));
  size_t found = 0;
  for (const auto& reference : references)
    if (text.find(lower(decode(reference))) != std::u32string::npos) ++found;
  return static_cast<double>(found) / static_cast<double>(references.size());
}

double string_match_part(std::string_view prediction, const std::vector<std::string>& references) {
  const std::u32string text = lower(decode(prediction));
  for (const auto& reference : references)
    if (text.find(lower(decode(reference))) != std::u32string::npos) return 1.0;
  return 0.0;
}

std::string normalize_answer(std::string_view text) {
  // lower, then remove_punc
  std::u32string chars;
  for (char32_t cp : lower(decode(text)))
    if (!is_ascii_punct(cp)) chars.push_back(cp);
  // remove_articles: re.sub(r"\b(a|an|the)\b", " ", text)
  std::u32string without_articles;
  size_t i = 0;
  while (i < chars.size()) {
    size_t matched = 0;
    if (i == 0 || !is_word(chars[i - 1])) {
      for (std::u32string_view article : {U"a", U"an", U"the"}) {
        const size_t end = i + article.size();
        if (std::u32string_view(chars).substr(i, article.size()) == article &&
            (end == chars.size() || !is_word(chars[end]))) {
          matched = article.size();
          break;
        }
      }
    }
    if (matched > 0) {
      without_articles.push_back(U' ');
      i += matched;
    } else {
      without_articles.push_back(chars[i++]);
    }
  }
  // white_space_fix
  return encode(collapse_whitespace(without_articles));
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  const auto prediction_tokens = split_whitespace(decode(normalize_answer(prediction)));
  const auto truth_tokens = split_whitespace(decode(normalize_answer(ground_truth)));
  // Counter(prediction) & Counter(ground_truth)
  std::map<std::u32string, int> truth_counts;
  for (const auto& token : truth_tokens) ++truth_counts[token];
  size_t same = 0;
  for (const auto& token : prediction_tokens) {
    auto it = truth_counts.find(token);
    if (it != truth_counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / static_cast<double>(prediction_tokens.size());
  const double recall = static_cast<double>(same) / static_cast<double>(truth_tokens.size());
  return 2.0 * precision * recall / (precision + recall);
}

double rouge_score(std::string_view prediction, std::string_view ground_truth) {
  const auto hypothesis = rouge_sentences(prediction);
  const auto reference = rouge_sentences(ground_truth);
  // The package raises ValueError on an empty side; LongBench's except returns 0.
  if (hypothesis.empty() || reference.empty()) return 0.0;
  // rouge_l_summary_level with exclusive=True: word counts and the LCS union are sets.
  const double m = static_cast<double>(unique_words(reference));
  const double n = static_cast<double>(unique_words(hypothesis));
  std::set<std::string> lcs_union;
  for (const auto& reference_sentence : reference)
    for (const auto& hypothesis_sentence : hypothesis)
      add_lcs_words(reference_sentence, hypothesis_sentence, lcs_union);
  const double llcs = static_cast<double>(lcs_union.size());
  const double recall = llcs / m;
  const double precision = llcs / n;
  return 2.0 * ((precision * recall) / (precision + recall + 1e-8));
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matches;
  for (const auto& class_name : all_classes)
    if (contains(prediction, class_name)) matches.push_back(class_name);
  // The official loop removes from the list it iterates over, so the element after a removed one is
  // skipped; list.remove drops the first equal element. Reproduced as is.
  for (size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (contains(ground_truth, term) && term != ground_truth)
      matches.erase(std::find(matches.begin(), matches.end(), term));
  }
  // `if em_match_list != 0` is always true in the official code, so its difflib fallback never runs.
  if (std::find(matches.begin(), matches.end(), ground_truth) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  // re.findall(r'Paragraph (\d+)', ground_truth)[0]; the official code raises IndexError when the
  // ground truth has no "Paragraph N", here that scores 0 (the reader rejects such records).
  constexpr std::string_view kPrefix = "Paragraph ";
  for (size_t at = ground_truth.find(kPrefix); at != std::string_view::npos;
       at = ground_truth.find(kPrefix, at + 1)) {
    size_t end = at + kPrefix.size();
    while (end < ground_truth.size() && is_ascii_digit(ground_truth[end])) ++end;
    if (end > at + kPrefix.size())
      return share_equal(find_numbers(prediction),
                         ground_truth.substr(at + kPrefix.size(), end - at - kPrefix.size()));
  }
  return 0.0;
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  return share_equal(find_numbers(prediction), ground_truth);
}

double levenshtein_ratio(std::string_view a, std::string_view b) {
  const std::u32string x = decode(a), y = decode(b);
  const size_t total = x.size() + y.size();
  if (total == 0) return 1.0;
  const size_t indel_distance = total - 2 * lcs_length(x, y);
  return 1.0 - static_cast<double>(indel_distance) / static_cast<double>(total);
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  // prediction.lstrip('\n').split('\n'): the first line without '`', '#' or "//", else "".
  const size_t first = prediction.find_first_not_of('\n');
  std::string_view rest = first == std::string_view::npos ? std::string_view() : prediction.substr(first);
  std::string_view line;
  while (true) {
    const size_t end = rest.find('\n');
    const std::string_view candidate = rest.substr(0, end);
    if (!contains(candidate, "`") && !contains(candidate, "#") && !contains(candidate, "//")) {
      line = candidate;
      break;
    }
    if (end == std::string_view::npos) break;
    rest = rest.substr(end + 1);
  }
  // fuzz.ratio: 100 if equal, 0 if either is empty, else int(round(100 * ratio)) (round half to
  // even, as std::nearbyint in the default rounding mode).
  if (line == ground_truth) return 1.0;
  if (line.empty() || ground_truth.empty()) return 0.0;
  return std::nearbyint(100.0 * levenshtein_ratio(line, ground_truth)) / 100.0;
}

}  // namespace kvshrink::eval
