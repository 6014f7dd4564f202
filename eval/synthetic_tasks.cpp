#include "eval/synthetic_tasks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string_view>
#include <unordered_set>

#include "eval/haystack.h"

namespace kvshrink::eval {
namespace {

// ---- word lists (common English words; keys are "adjective-noun", cwe draws from all) ----

constexpr std::string_view kAdjectives[] = {
    "abundant", "acidic",   "adorable", "agreeable", "alert",    "ancient",  "angry",   "anxious", "average",
    "bashful",  "bitter",   "brave",    "bright",    "broad",    "busy",     "calm",    "careful", "cheerful",
    "clever",   "cloudy",   "clumsy",   "colossal",  "cool",     "crowded",  "curious", "damp",    "dark",
    "deep",     "delicate", "dizzy",    "dusty",     "eager",    "early",    "elegant", "empty",   "fancy",
    "fast",     "fierce",   "flat",     "fragile",   "fresh",    "friendly", "frozen",  "gentle",  "giant",
    "glossy",   "golden",   "grand",    "greasy",    "handsome", "happy",    "heavy",   "helpful", "hollow",
    "honest",   "hungry",   "icy",      "jolly",     "juicy",    "kind",     "large",   "lazy",    "little",
    "lively",   "lonely",   "loud",     "lucky",     "massive",  "mellow",   "mighty",  "modern",  "muddy",
    "narrow",   "nervous",  "noisy",    "odd",       "old",      "plain",    "polite",  "proud",   "quick",
    "quiet",    "rapid",    "rare",     "rich",      "rough",    "round",    "rusty",   "salty",   "scary",
    "shallow",  "sharp",    "shiny",    "short",     "silent",   "silly",    "slow",    "small",   "smooth",
    "soft",     "solid",    "sour",     "spicy",     "steep",    "sticky",   "strong",  "sweet",   "swift",
    "tall",     "tender",   "thick",    "thin",      "tidy",     "tiny",     "tough",   "warm",    "wet",
    "wide",     "wild",     "wise",     "witty",     "young",    "zealous",
};

constexpr std::string_view kNouns[] = {
    "actor",    "airport", "anchor",   "angle",   "animal",  "apple",    "army",    "arrow",   "artist",
    "autumn",   "baby",    "badge",    "bakery",  "balloon", "banana",   "band",    "bank",    "basket",
    "beach",    "bean",    "bear",     "bed",     "bee",     "bell",     "bicycle", "bird",    "blanket",
    "boat",     "bone",    "book",     "bottle",  "box",     "branch",   "bread",   "brick",   "bridge",
    "brother",  "bucket",  "butter",   "button",  "cabin",   "cake",     "camera",  "camp",    "candle",
    "canyon",   "car",     "card",     "carpet",  "carrot",  "castle",   "cat",     "cave",    "chair",
    "chalk",    "cheese",  "cherry",   "chicken", "church",  "circle",   "city",    "clock",   "cloud",
    "coat",     "coffee",  "coin",     "comet",   "copper",  "corner",   "cotton",  "country", "cousin",
    "cow",      "crayon",  "crown",    "cup",     "curtain", "desert",   "desk",    "diamond", "dinner",
    "doctor",   "dog",     "dolphin",  "door",    "dragon",  "drawer",   "dream",   "drum",    "duck",
    "eagle",    "earth",   "egg",      "elbow",   "engine",  "farm",     "father",  "feather", "fence",
    "field",    "finger",  "fire",     "fish",    "flag",    "flower",   "flute",   "forest",  "fork",
    "fountain", "fox",     "friend",   "frog",    "fruit",   "garden",   "gate",    "ghost",   "gift",
    "glass",    "glove",   "goat",     "grape",   "guitar",  "hammer",   "harbor",  "hat",     "hill",
    "honey",    "horse",   "hospital", "house",   "island",  "jacket",   "jelly",   "jewel",   "kettle",
    "key",      "kitchen", "kite",     "knife",   "ladder",  "lake",     "lamp",    "leaf",    "lemon",
    "letter",   "library", "lion",     "lizard",  "lock",    "machine",  "magnet",  "map",     "market",
    "meadow",   "mirror",  "monkey",   "moon",    "mother",  "mountain", "mouse",   "museum",  "needle",
    "nest",     "night",   "ocean",    "office",  "onion",   "orange",   "owl",     "paint",   "palace",
    "pan",      "paper",   "parrot",   "pearl",   "pencil",  "pepper",   "piano",   "pillow",  "pilot",
    "planet",   "plate",   "pocket",   "pond",    "potato",  "puzzle",   "queen",   "rabbit",  "radio",
    "rain",     "ribbon",  "river",    "road",    "robot",   "rocket",   "roof",    "rope",    "rose",
    "saddle",   "sailor",  "salad",    "sand",    "school",  "scissors", "sea",     "seed",    "shadow",
    "sheep",    "shell",   "ship",     "shoe",    "shop",    "silver",   "sister",  "skate",   "snake",
    "snow",     "soap",    "soldier",  "song",    "spider",  "spoon",    "square",  "stamp",   "star",
    "station",  "stone",   "storm",    "stove",   "street",  "string",   "sugar",   "summer",  "sun",
    "swan",     "table",   "teacher",  "temple",  "tent",    "thunder",  "ticket",  "tiger",   "toast",
    "tomato",   "tower",   "town",     "toy",     "train",   "tree",     "truck",   "tunnel",  "turtle",
    "umbrella", "valley",  "vase",     "village", "violin",  "wagon",    "wall",    "watch",   "water",
    "whale",    "wheel",   "window",   "winter",  "wolf",    "wood",     "worm",    "yard",    "zebra",
};

constexpr std::string_view kVerbs[] = {
    "accept", "add",     "admire",  "allow",   "answer",  "arrive", "ask",      "bake",   "balance", "bathe",
    "begin",  "believe", "borrow",  "bounce",  "breathe", "build",  "burn",     "call",   "carry",   "catch",
    "change", "chase",   "choose",  "clap",    "clean",   "climb",  "collect",  "count",  "cover",   "crawl",
    "cross",  "dance",   "decide",  "deliver", "dig",     "drink",  "drive",    "earn",   "enjoy",   "enter",
    "escape", "explain", "explore", "fetch",   "fill",    "find",   "fix",      "float",  "fly",     "fold",
    "follow", "gather",  "give",    "glow",    "grow",    "guess",  "guide",    "hang",   "help",    "hide",
    "hope",   "hug",     "hunt",    "hurry",   "imagine", "invent", "invite",   "join",   "jump",    "kick",
    "knit",   "knock",   "laugh",   "learn",   "lift",    "listen", "live",     "march",  "melt",    "mix",
    "move",   "obey",    "offer",   "open",    "paddle",  "pause",  "pick",     "plant",  "play",    "pour",
    "pray",   "promise", "pull",    "push",    "read",    "relax",  "remember", "repair", "rest",    "ride",
    "row",    "run",     "sail",    "save",    "scream",  "search", "serve",    "sew",    "shout",   "sing",
    "skip",   "sleep",   "smile",   "sneeze",  "solve",   "speak",  "spin",     "sprint", "stir",    "swim",
    "talk",   "teach",   "think",   "throw",   "travel",  "trust",  "visit",    "wait",   "walk",    "wander",
    "wash",   "whisper", "win",     "wish",    "work",    "worry",  "write",    "yawn",   "yell",    "zoom",
};

// ---- deterministic randomness: mt19937_64 output is fixed by the standard; the rest is ours ----

// Uniform integer in [0, n) by rejection (no modulo bias).
uint64_t draw_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t rejected = (max % n + 1) % n;  // 2^64 mod n values at the top are rejected
  uint64_t x = rng();
  while (rejected != 0 && x > max - rejected) x = rng();
  return x % n;
}

int64_t draw_between(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive
  return lo + static_cast<int64_t>(draw_below(rng, static_cast<uint64_t>(hi - lo + 1)));
}

template <typename T>
void shuffle(std::vector<T>& items, std::mt19937_64& rng) {  // Fisher-Yates
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[draw_below(rng, i)]);
}

std::string random_uuid(std::mt19937_64& rng) {  // uuid4 layout: 8-4-4-4-12 lower-case hex
  static const char kHex[] = "0123456789abcdef";
  uint64_t bits[2] = {rng(), rng()};
  bits[0] = (bits[0] & ~0xF000ULL) | 0x4000ULL;        // version 4
  bits[1] = (bits[1] & ~(3ULL << 62)) | (2ULL << 62);  // variant 10xx
  std::string hex;
  for (uint64_t word : bits) {
    for (int shift = 60; shift >= 0; shift -= 4) hex += kHex[(word >> shift) & 0xF];
  }
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20, 12);
}

std::string random_letters(std::mt19937_64& rng, int count, char first) {
  std::string word;
  for (int i = 0; i < count; ++i) word += static_cast<char>(first + draw_below(rng, 26));
  return word;
}

// Draws until the value is new, so keys/values/names of one sample are distinct.
template <typename Draw>
std::string draw_distinct(std::unordered_set<std::string>& used, Draw draw) {
  std::string value = draw();
  while (!used.insert(value).second) value = draw();
  return value;
}

// ---- prompt assembly and length fitting ----

// Inserts `facts` (depth in percent, sentence) between the haystack's sentences: a fact at depth d
// goes at the sentence boundary nearest to d percent of the haystack's characters (sentences vary
// in length, so counting sentences would place it off); facts at the same place keep their order.
std::vector<std::string> insert_facts(const std::vector<std::string>& sentences,
                                      std::vector<std::pair<double, std::string>> facts) {
  std::stable_sort(facts.begin(), facts.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // starts[i] = characters before sentence i (with separating spaces); starts[count] = total.
  std::vector<double> starts = {0.0};
  for (const std::string& sentence : sentences)
    starts.push_back(starts.back() + static_cast<double>(sentence.size() + 1));
  std::vector<size_t> at;  // boundary index of each fact: the one nearest to its character target
  for (const auto& fact : facts) {
    const double target = fact.first / 100.0 * starts.back();
    size_t i = static_cast<size_t>(std::lower_bound(starts.begin(), starts.end(), target) - starts.begin());
    if (i == starts.size() || (i > 0 && target - starts[i - 1] <= starts[i] - target)) --i;
    at.push_back(i);
  }
  std::vector<std::string> out;
  size_t next = 0;
  for (size_t i = 0; i <= sentences.size(); ++i) {
    while (next < facts.size() && at[next] <= i) out.push_back(facts[next++].second);
    if (i < sentences.size()) out.push_back(sentences[i]);
  }
  return out;
}

int64_t prompt_tokens(const EvalSample& sample, const TokenCounter& count_tokens) {
  return count_tokens(sample.context + "\n" + sample.question);
}

// Builds the sample at the largest size n whose prompt fits context_length. `build(n)` must be a
// pure function of n (it copies any random state it uses).
template <typename Build>
EvalSample fit_sample(int64_t context_length, int64_t max_n, const TokenCounter& count_tokens, Build build) {
  const int64_t n = fit_largest(context_length, max_n,
                                [&](int64_t size) { return prompt_tokens(build(size), count_tokens); });
  EvalSample sample = build(n);
  sample.context_length = context_length;
  return sample;
}

int64_t max_haystack_words(int64_t context_length) {
  return 64 * context_length + 1024;
}

// ---- passkey: "The pass key is N. Remember it. N is the pass key." in noise ----

EvalSample make_passkey(int64_t context_length, double depth, uint64_t seed, const TokenCounter& count) {
  std::mt19937_64 rng(seed);
  const std::string key = std::to_string(draw_between(rng, 10000, 99999));
  const std::string needle = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  auto build = [&](int64_t words) {
    EvalSample s;
    s.task = "passkey";
    s.depth_percent = depth;
    s.context =
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.\n" +
        join_sentences(insert_facts(haystack_sentences(HaystackKind::kNoise, words), {{depth, needle}}));
    s.question = "What is the pass key?";
    s.answer_prefix = "The pass key is";
    s.answers = {key};
    s.metric = Metric::kStringMatchAll;
    s.max_new_tokens = 16;
    return s;
  };
  return fit_sample(context_length, max_haystack_words(context_length), count, build);
}

// ---- niah: "One of the special magic {numbers|uuids} for {key} is: {value}." in a haystack ----

struct NiahSpec {
  HaystackKind haystack;
  bool uuid_values;  // else numbers of `digits` digits
  int num_keys;      // needles with distinct keys (the queried ones first, then distractors)
  int num_values;    // values per key
  int num_queries;   // keys asked about
  int digits = 7;    // RULER's 7; niah_digits_N: N (6..10)
};

int64_t power_of_ten(int n) {
  int64_t p = 1;
  for (int i = 0; i < n; ++i) p *= 10;
  return p;
}

EvalSample make_niah(const std::string& task, const NiahSpec& spec, int64_t context_length, double depth,
                     uint64_t seed, const TokenCounter& count) {
  std::mt19937_64 rng(seed);
  std::unordered_set<std::string> used;
  const std::string type = spec.uuid_values ? "uuids" : "numbers";
  std::vector<std::string> keys;
  for (int k = 0; k < spec.num_keys; ++k) {
    keys.push_back(draw_distinct(used, [&] {
      return std::string(kAdjectives[draw_below(rng, std::size(kAdjectives))]) + "-" +
             std::string(kNouns[draw_below(rng, std::size(kNouns))]);
    }));
  }
  // Needle (k, v): the first sits at the requested depth, the others at random depths.
  std::vector<std::pair<double, std::string>> needles;
  std::vector<std::string> answers;
  for (int k = 0; k < spec.num_keys; ++k) {
    for (int v = 0; v < spec.num_values; ++v) {
      const std::string value = draw_distinct(used, [&] {
        return spec.uuid_values ? random_uuid(rng)
                                : std::to_string(draw_between(rng, power_of_ten(spec.digits - 1),
                                                              power_of_ten(spec.digits) - 1));
      });
      const double at = (k == 0 && v == 0) ? depth : static_cast<double>(draw_below(rng, 1001)) / 10.0;
      needles.emplace_back(at,
                           "One of the special magic " + type + " for " + keys[k] + " is: " + value + ".");
      if (k < spec.num_queries) answers.push_back(value);
    }
  }
  std::string query = keys[0];
  if (spec.num_queries > 1) {
    query.clear();
    for (int q = 0; q + 1 < spec.num_queries; ++q) query += keys[q] + ", ";
    query += "and " + keys[spec.num_queries - 1];
  }
  auto build = [&](int64_t words) {
    EvalSample s;
    s.task = task;
    s.depth_percent = depth;
    s.context =
        "Some special magic " + type +
        " are hidden within the following text. Make sure to memorize it. I will quiz you about the " + type +
        " afterwards.\n" + join_sentences(insert_facts(haystack_sentences(spec.haystack, words), needles));
    s.question =
        "What are all the special magic " + type + " for " + query + " mentioned in the provided text?";
    s.answer_prefix = "The special magic " + type + " for " + query + " mentioned in the provided text are";
    s.answers = answers;
    s.metric = Metric::kStringMatchAll;
    s.max_new_tokens = 128;
    return s;
  };
  return fit_sample(context_length, max_haystack_words(context_length), count, build);
}

// ---- vt: one chain "VAR A = 12345." "VAR B = VAR A." ... (4 hops) at random places in noise ----

EvalSample make_vt(int64_t context_length, uint64_t seed, const TokenCounter& count) {
  constexpr int kHops = 4;
  std::mt19937_64 rng(seed);
  std::unordered_set<std::string> used;
  const std::string value = std::to_string(draw_between(rng, 10000, 99999));
  std::vector<std::string> names;
  for (int i = 0; i <= kHops; ++i)
    names.push_back(draw_distinct(used, [&] { return random_letters(rng, 5, 'A'); }));
  std::vector<double> depths;
  for (int i = 0; i <= kHops; ++i) depths.push_back(static_cast<double>(draw_below(rng, 1001)) / 10.0);
  std::sort(depths.begin(), depths.end());  // statements stay in chain order
  std::vector<std::pair<double, std::string>> statements;
  statements.emplace_back(depths[0], "VAR " + names[0] + " = " + value + ".");
  for (int i = 1; i <= kHops; ++i)
    statements.emplace_back(depths[i], "VAR " + names[i] + " = VAR " + names[i - 1] + ".");
  auto build = [&](int64_t words) {
    EvalSample s;
    s.task = "vt";
    s.context = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" +
                join_sentences(insert_facts(haystack_sentences(HaystackKind::kNoise, words), statements));
    s.question = "Question: Find all variables that are assigned the value " + value + " in the text above.";
    s.answer_prefix = "Answer: According to the chain(s) of variable assignment in the text above, " +
                      std::to_string(kHops + 1) + " variables are assigned the value " + value +
                      ", they are:";
    s.answers = names;
    s.metric = Metric::kStringMatchAll;
    s.max_new_tokens = 30;
    return s;
  };
  return fit_sample(context_length, max_haystack_words(context_length), count, build);
}

// ---- cwe: "1. word 2. word ..." where 10 words appear freq_cw times and the rest freq_ucw times ----

std::vector<std::string> word_pool() {  // all list words, each once, in list order
  std::vector<std::string> pool;
  std::unordered_set<std::string> seen;
  auto add = [&](const auto& list) {
    for (std::string_view w : list) {
      if (seen.insert(std::string(w)).second) pool.emplace_back(w);
    }
  };
  add(kNouns);
  add(kAdjectives);
  add(kVerbs);
  return pool;
}

EvalSample make_cwe(int64_t context_length, uint64_t seed, const TokenCounter& count) {
  constexpr int kCommon = 10;
  // RULER's frequencies; short contexts use fewer repeats so the common words leave room.
  const int freq_common = context_length < 4096 ? 6 : 30;
  const int freq_uncommon = context_length < 4096 ? 1 : 3;
  std::mt19937_64 rng(seed);
  std::vector<std::string> pool = word_pool();
  shuffle(pool, rng);
  const std::vector<std::string> common(pool.begin(), pool.begin() + kCommon);
  const std::vector<std::string> uncommon(pool.begin() + kCommon, pool.end());
  // Uncommon words may repeat beyond freq_uncommon once the pool runs out, but stay below half of
  // freq_common, which bounds the list length (about 30K tokens at freq_common 30).
  const int64_t max_entries =
      static_cast<int64_t>(uncommon.size()) * std::max(freq_uncommon, freq_common / 2 - 1);
  auto build = [&](int64_t entries) {
    std::mt19937_64 r = rng;
    std::vector<std::string> list;
    for (const std::string& w : common) list.insert(list.end(), freq_common, w);
    const int64_t distinct = std::min<int64_t>(static_cast<int64_t>(uncommon.size()),
                                               (entries + freq_uncommon - 1) / freq_uncommon);
    for (int64_t i = 0; i < entries; ++i)
      list.push_back(uncommon[static_cast<size_t>(i % std::max<int64_t>(distinct, 1))]);
    shuffle(list, r);
    EvalSample s;
    s.task = "cwe";
    s.context =
        "Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
        "ones that appear most often.\n";
    for (size_t i = 0; i < list.size(); ++i)
      s.context += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
    s.question = "Question: What are the 10 most common words in the above list?";
    s.answer_prefix = "Answer: The top 10 words that appear most often in the list are:";
    s.answers = common;
    s.metric = Metric::kStringMatchAll;
    s.max_new_tokens = 120;
    return s;
  };
  return fit_sample(context_length, max_entries, count, build);
}

// ---- fwe: coded words with Zipf(alpha 2) counts, the most frequent one written "...." ----

EvalSample make_fwe(int64_t context_length, uint64_t seed, const TokenCounter& count) {
  constexpr double kAlpha = 2.0;
  const uint64_t vocab_seed = seed;
  auto build = [&](int64_t total) {
    std::mt19937_64 rng(vocab_seed);
    // Rank r (1-based) appears max(1, floor(A / r^alpha)) times; the vocabulary is total/3 words
    // and A = total/3, so the text has about (0.55 + 0.33) * total words. Rank 1 is "....".
    const int64_t vocab_size = std::max<int64_t>(5, total / 3);
    const double head = static_cast<double>(std::max<int64_t>(total / 3, 60));
    std::unordered_set<std::string> used;
    std::vector<std::string> vocab = {"...."};
    while (static_cast<int64_t>(vocab.size()) < vocab_size) {
      vocab.push_back(draw_distinct(used, [&] { return random_letters(rng, 6, 'a'); }));
    }
    std::vector<std::string> words;
    for (int64_t r = 1; r <= vocab_size; ++r) {
      const int64_t times =
          std::max<int64_t>(1, static_cast<int64_t>(head / std::pow(static_cast<double>(r), kAlpha)));
      words.insert(words.end(), times, vocab[static_cast<size_t>(r - 1)]);
    }
    shuffle(words, rng);
    EvalSample s;
    s.task = "fwe";
    s.context =
        "Read the following coded text and track the frequency of each coded word. Find the three most "
        "frequently appeared coded words. ";
    for (size_t i = 0; i < words.size(); ++i) s.context += (i ? " " : "") + words[i];
    s.question =
        "Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most "
        "frequently appeared words in the above coded text?";
    s.answer_prefix =
        "Answer: According to the coded text above, the three most frequently appeared words are:";
    s.answers = {vocab[1], vocab[2], vocab[3]};
    s.metric = Metric::kStringMatchAll;
    s.max_new_tokens = 50;
    return s;
  };
  return fit_sample(context_length, 64 * context_length + 1024, count, build);
}

const NiahSpec* niah_spec(const std::string& task) {
  static const std::pair<const char*, NiahSpec> kSpecs[] = {
      {"niah_single_1", {HaystackKind::kNoise, false, 1, 1, 1}},
      {"niah_single_2", {HaystackKind::kEssay, false, 1, 1, 1}},
      {"niah_single_3", {HaystackKind::kEssay, true, 1, 1, 1}},
      {"niah_multikey_1", {HaystackKind::kEssay, false, 4, 1, 1}},
      {"niah_multivalue", {HaystackKind::kEssay, false, 1, 4, 1}},
      {"niah_multiquery", {HaystackKind::kEssay, false, 4, 1, 4}},
      // niah_single_2 with an N-digit number (SmolLM2 writes one digit per token)
      {"niah_digits_6", {HaystackKind::kEssay, false, 1, 1, 1, 6}},
      {"niah_digits_7", {HaystackKind::kEssay, false, 1, 1, 1, 7}},
      {"niah_digits_8", {HaystackKind::kEssay, false, 1, 1, 1, 8}},
      {"niah_digits_9", {HaystackKind::kEssay, false, 1, 1, 1, 9}},
      {"niah_digits_10", {HaystackKind::kEssay, false, 1, 1, 1, 10}},
  };
  for (const auto& [name, spec] : kSpecs) {
    if (task == name) return &spec;
  }
  return nullptr;
}

}  // namespace

std::vector<std::string> synthetic_task_names() {
  return {"passkey",
          "niah_single_1",
          "niah_single_2",
          "niah_single_3",
          "niah_multikey_1",
          "niah_multivalue",
          "niah_multiquery",
          "niah_digits_6",
          "niah_digits_7",
          "niah_digits_8",
          "niah_digits_9",
          "niah_digits_10",
          "vt",
          "cwe",
          "fwe"};
}

EvalSample make_synthetic_sample(const std::string& task, int64_t context_length, double depth_percent,
                                 uint64_t seed, const TokenCounter& count_tokens) {
  const std::vector<std::string> names = synthetic_task_names();
  if (std::find(names.begin(), names.end(), task) == names.end()) {
    std::string valid;
    for (const std::string& name : names) valid += (valid.empty() ? "" : ", ") + name;
    throw std::invalid_argument("unknown synthetic task '" + task + "'; valid tasks: " + valid);
  }
  if (!(depth_percent >= 0.0 && depth_percent <= 100.0)) {
    throw std::invalid_argument("depth_percent must be in [0, 100], got " + std::to_string(depth_percent));
  }
  if (context_length <= 0) throw std::invalid_argument("context_length must be positive");
  EvalSample sample =
      task == "passkey" ? make_passkey(context_length, depth_percent, seed, count_tokens)
      : task == "vt"    ? make_vt(context_length, seed, count_tokens)
      : task == "cwe"   ? make_cwe(context_length, seed, count_tokens)
      : task == "fwe"   ? make_fwe(context_length, seed, count_tokens)
                      : make_niah(task, *niah_spec(task), context_length, depth_percent, seed, count_tokens);
  sample.question.insert(0, "\n");  // the prompt is context + question (eval_sample.h)
  return sample;
}

}  // namespace kvshrink::eval
