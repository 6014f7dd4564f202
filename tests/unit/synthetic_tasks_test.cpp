// Synthetic RULER-style tasks: determinism, answers present in the context, needle depth, length
// fitting, and errors. Token counters here are simple stand-ins for the model tokenizer.
#include "eval/synthetic_tasks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "eval/haystack.h"

namespace kvshrink::eval {
namespace {

int64_t bytes_over_4(std::string_view text) {
  return static_cast<int64_t>((text.size() + 3) / 4);
}

int64_t whitespace_words(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string word;
  int64_t count = 0;
  while (in >> word) ++count;
  return count;
}

const std::vector<std::string> kNeedleTasks = {"passkey",        "niah_single_1",   "niah_single_2",
                                               "niah_single_3",  "niah_multikey_1", "niah_multivalue",
                                               "niah_multiquery"};

bool same(const EvalSample& a, const EvalSample& b) {
  return a.context == b.context && a.question == b.question && a.answer_prefix == b.answer_prefix &&
         a.answers == b.answers && a.max_new_tokens == b.max_new_tokens && a.metric == b.metric;
}

TEST(SyntheticTasks, NamesAreRulerNames) {
  const std::vector<std::string> expected = {"passkey",
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
  EXPECT_EQ(synthetic_task_names(), expected);
}

TEST(SyntheticTasks, SameSeedSameSampleOtherSeedOtherSample) {
  for (const std::string& task : synthetic_task_names()) {
    SCOPED_TRACE(task);
    const EvalSample a = make_synthetic_sample(task, 2048, 50, 7, bytes_over_4);
    const EvalSample b = make_synthetic_sample(task, 2048, 50, 7, bytes_over_4);
    const EvalSample c = make_synthetic_sample(task, 2048, 50, 8, bytes_over_4);
    EXPECT_TRUE(same(a, b));
    EXPECT_FALSE(same(a, c));
    EXPECT_NE(a.answers, c.answers);
    EXPECT_EQ(a.task, task);
    EXPECT_EQ(a.context_length, 2048);
  }
}

TEST(SyntheticTasks, FixedSeedGivesFixedKeys) {
  // Guards cross-machine determinism: these values depend only on mt19937_64 and our own draws.
  const EvalSample a = make_synthetic_sample("passkey", 1024, 50, 1, bytes_over_4);
  const EvalSample b = make_synthetic_sample("passkey", 1024, 50, 1, whitespace_words);
  EXPECT_EQ(a.answers, b.answers);
  ASSERT_EQ(a.answers.size(), 1u);
  EXPECT_EQ(a.answers[0].size(), 5u);
}

TEST(SyntheticTasks, RetrievalAnswersAppearInContext) {
  for (const std::string& task : synthetic_task_names()) {
    SCOPED_TRACE(task);
    const EvalSample s = make_synthetic_sample(task, 4096, 30, 3, bytes_over_4);
    ASSERT_FALSE(s.answers.empty());
    for (const std::string& answer : s.answers) {
      EXPECT_NE(s.context.find(answer), std::string::npos) << answer;
    }
    EXPECT_EQ(s.metric, Metric::kStringMatchAll);
    EXPECT_FALSE(s.question.empty());
    EXPECT_FALSE(s.answer_prefix.empty());
  }
}

TEST(SyntheticTasks, AnswerCountsAndGenerationLengthsFollowRuler) {
  auto make = [](const std::string& task) { return make_synthetic_sample(task, 4096, 50, 11, bytes_over_4); };
  EXPECT_EQ(make("passkey").max_new_tokens, 16);
  EXPECT_EQ(make("niah_single_1").max_new_tokens, 128);
  EXPECT_EQ(make("niah_single_1").answers.size(), 1u);
  EXPECT_EQ(make("niah_single_3").answers[0].size(), 36u);  // uuid
  EXPECT_EQ(make("niah_multikey_1").answers.size(), 1u);
  EXPECT_EQ(make("niah_multivalue").answers.size(), 4u);
  EXPECT_EQ(make("niah_multiquery").answers.size(), 4u);
  EXPECT_EQ(make("niah_single_2").answers[0].size(), 7u);  // RULER's 7-digit numbers
  for (int digits = 6; digits <= 10; ++digits) {
    const EvalSample s = make("niah_digits_" + std::to_string(digits));
    ASSERT_EQ(s.answers.size(), 1u);
    EXPECT_EQ(s.answers[0].size(), static_cast<size_t>(digits));
    EXPECT_NE(s.answers[0][0], '0');
    EXPECT_EQ(s.answers[0].find_first_not_of("0123456789"), std::string::npos);
    EXPECT_EQ(s.max_new_tokens, 128);
  }
  EXPECT_EQ(make("vt").answers.size(), 5u);
  EXPECT_EQ(make("vt").max_new_tokens, 30);
  EXPECT_EQ(make("cwe").answers.size(), 10u);
  EXPECT_EQ(make("cwe").max_new_tokens, 120);
  EXPECT_EQ(make("fwe").answers.size(), 3u);
  EXPECT_EQ(make("fwe").max_new_tokens, 50);
  // Multi-key: three distractor needles with other keys besides the asked one.
  const EvalSample multikey = make("niah_multikey_1");
  size_t needles = 0;
  for (size_t at = multikey.context.find("One of the special magic"); at != std::string::npos;
       at = multikey.context.find("One of the special magic", at + 1)) {
    ++needles;
  }
  EXPECT_EQ(needles, 4u);
}

size_t count_occurrences(const std::string& text, const std::string& word) {
  size_t count = 0;
  std::istringstream in(text);
  std::string token;
  while (in >> token) count += token == word;
  return count;
}

TEST(SyntheticTasks, CweAndFweAnswersAreTheMostFrequentWords) {
  for (int64_t length : {1024, 4096}) {
    const EvalSample cwe = make_synthetic_sample("cwe", length, 0, 5, bytes_over_4);
    size_t least_common = SIZE_MAX;
    for (const std::string& w : cwe.answers)
      least_common = std::min(least_common, count_occurrences(cwe.context, w));
    std::istringstream in(cwe.context.substr(cwe.context.find('\n') + 1));
    std::string token;
    while (in >> token) {
      if (token.back() == '.') continue;  // list numbers "12."
      if (std::find(cwe.answers.begin(), cwe.answers.end(), token) != cwe.answers.end()) continue;
      ASSERT_LT(count_occurrences(cwe.context, token), least_common) << token;
    }
  }
  const EvalSample fwe = make_synthetic_sample("fwe", 4096, 0, 5, bytes_over_4);
  const size_t first = count_occurrences(fwe.context, fwe.answers[0]);
  const size_t second = count_occurrences(fwe.context, fwe.answers[1]);
  const size_t third = count_occurrences(fwe.context, fwe.answers[2]);
  EXPECT_GT(first, second);
  EXPECT_GT(second, third);
  EXPECT_GT(third, 3u);
}

TEST(SyntheticTasks, NeedleSitsAtRequestedDepth) {
  for (const std::string& task : kNeedleTasks) {
    for (double depth : {0.0, 50.0, 100.0}) {
      SCOPED_TRACE(task + " depth " + std::to_string(depth));
      const EvalSample s = make_synthetic_sample(task, 4096, depth, 13, bytes_over_4);
      EXPECT_EQ(s.depth_percent, depth);
      // The first needle holds the first answer (for multi-query: the first key's value).
      const size_t at = s.context.find(s.answers[0]);
      ASSERT_NE(at, std::string::npos);
      const double relative = 100.0 * static_cast<double>(at) / static_cast<double>(s.context.size());
      EXPECT_NEAR(relative, depth, 6.0);
    }
  }
}

TEST(SyntheticTasks, PromptFitsContextLength) {
  for (const std::string& task : synthetic_task_names()) {
    for (int64_t length : {1024, 2048, 4096, 8192}) {
      for (const TokenCounter& count : {TokenCounter(bytes_over_4), TokenCounter(whitespace_words)}) {
        SCOPED_TRACE(task + " " + std::to_string(length));
        const EvalSample s = make_synthetic_sample(task, length, 50, 21, count);
        const int64_t tokens = count(s.context + s.question);
        EXPECT_LE(tokens, length);
        EXPECT_GE(tokens, static_cast<int64_t>(0.9 * static_cast<double>(length)));
      }
    }
  }
}

TEST(SyntheticTasks, FittingCallsTheCounterLogarithmicallyOften) {
  int calls = 0;
  const TokenCounter counting = [&](std::string_view text) {
    ++calls;
    return bytes_over_4(text);
  };
  make_synthetic_sample("niah_single_2", 8192, 50, 1, counting);
  EXPECT_LE(calls, 40);
}

TEST(SyntheticTasks, UnknownTaskListsValidNames) {
  try {
    make_synthetic_sample("niah_single_9", 1024, 50, 1, bytes_over_4);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    for (const std::string& name : synthetic_task_names()) EXPECT_NE(message.find(name), std::string::npos);
  }
  EXPECT_THROW(make_synthetic_sample("passkey", 1024, 101, 1, bytes_over_4), std::invalid_argument);
  EXPECT_THROW(make_synthetic_sample("passkey", 10, 50, 1, bytes_over_4), std::runtime_error);
}

TEST(Haystack, NoiseAndEssayTextFitTheBudget) {
  const std::string noise = haystack_text(HaystackKind::kNoise, 500, bytes_over_4);
  EXPECT_EQ(noise.rfind("The grass is green. The sky is blue.", 0), 0u);
  EXPECT_LE(bytes_over_4(noise), 500);
  EXPECT_GE(bytes_over_4(noise), 490);
  ASSERT_FALSE(essay_files().empty()) << "needs Debian's base-files licence texts";
  const std::string essay = haystack_text(HaystackKind::kEssay, 3000, whitespace_words);
  EXPECT_EQ(whitespace_words(essay), 3000);
}

TEST(Haystack, MissingLicenceDirectoryIsAClearError) {
  EXPECT_TRUE(essay_files("/nonexistent-dir").empty());
  try {
    load_essay_words("/nonexistent-dir");
    FAIL() << "no exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent-dir"), std::string::npos);
  }
}

TEST(Haystack, FitLargestFindsTheBoundary) {
  int calls = 0;
  const int64_t n = fit_largest(1000, 1'000'000, [&](int64_t x) {
    ++calls;
    return 3 * x + 7;
  });
  EXPECT_EQ(n, 331);
  EXPECT_LE(calls, 25);
  EXPECT_EQ(fit_largest(1000, 100, [](int64_t x) { return x; }), 100);
}

}  // namespace
}  // namespace kvshrink::eval
