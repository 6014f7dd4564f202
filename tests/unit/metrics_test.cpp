// RULER and LongBench metrics on hand-computed cases, including the official code's quirks.
#include "eval/metrics.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/eval_sample.h"

namespace kvshrink::eval {
namespace {

TEST(StringMatch, AllIsTheFractionFound) {
  const std::vector<std::string> refs = {"123", "456", "789"};
  EXPECT_DOUBLE_EQ(string_match_all("The keys are 123 and 456.", refs), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(string_match_all("123 456 789", refs), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("nothing", refs), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("anything", {}), 0.0);
}

TEST(StringMatch, PartIsOneIfAnyFound) {
  const std::vector<std::string> refs = {"123", "456"};
  EXPECT_DOUBLE_EQ(string_match_part("only 456 here", refs), 1.0);
  EXPECT_DOUBLE_EQ(string_match_part("none here", refs), 0.0);
}

TEST(StringMatch, IgnoresCase) {
  EXPECT_DOUBLE_EQ(string_match_all("the answer is paris", {"PARIS"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_part("ÉCOLE", {"école"}), 1.0);
}

TEST(NormalizeAnswer, LowersDropsPunctuationArticlesAndSpaces) {
  EXPECT_EQ(normalize_answer("The  Cat's hat, an apple!"), "cats hat apple");
  EXPECT_EQ(normalize_answer("A banana and an apple"), "banana and apple");  // "a" inside words stays
  EXPECT_EQ(normalize_answer("The A-Team"), "ateam");  // punctuation goes before articles
  EXPECT_EQ(normalize_answer("  \t\n "), "");
}

TEST(QaF1, TokenF1OnNormalizedText) {
  // "eiffel tower" vs "eiffel tower in paris": P = 2/2, R = 2/4, F1 = 2/3.
  EXPECT_NEAR(qa_f1_score("The Eiffel tower", "eiffel tower in Paris"), 2.0 / 3.0, 1e-12);
  // Counts are clipped: one "paris" in common, P = 1/3, R = 1, F1 = 1/2.
  EXPECT_NEAR(qa_f1_score("paris paris paris", "Paris"), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(qa_f1_score("Paris.", "paris"), 1.0);
  EXPECT_DOUBLE_EQ(qa_f1_score("London", "Paris"), 0.0);
  EXPECT_DOUBLE_EQ(qa_f1_score("", "Paris"), 0.0);
  EXPECT_DOUBLE_EQ(qa_f1_score("the", "a"), 0.0);  // both normalise to nothing
}

TEST(Rouge, IdenticalIsOne) {
  EXPECT_NEAR(rouge_score("the cat sat on the mat", "the cat sat on the mat"), 1.0, 1e-7);
}

TEST(Rouge, SingleSentenceLcs) {
  // Unique words: reference 5 {the cat was under bed}, prediction 6; LCS words {the cat was under bed}.
  // P = 5/6, R = 1, F = 10/11.
  EXPECT_NEAR(rouge_score("the cat was found under the bed", "the cat was under the bed"), 10.0 / 11.0, 1e-7);
}

TEST(Rouge, SummaryLevelUnionOverSentences) {
  // Prediction sentences "cats purr" and "dogs bark"; reference "dogs bark loudly".
  // LCS union {dogs bark}: P = 2/4, R = 2/3, F = 4/7.
  EXPECT_NEAR(rouge_score("cats purr. dogs bark.", "dogs bark loudly."), 4.0 / 7.0, 1e-7);
}

TEST(Rouge, CountsUniqueWordsAsThePackageDoes) {
  // The package's sets make "the the the" vs "the" a perfect match.
  EXPECT_NEAR(rouge_score("the the the", "the"), 1.0, 1e-7);
  // One LCS word out of two on each side: F = 1/2.
  EXPECT_NEAR(rouge_score("a b", "b a"), 0.5, 1e-7);
}

TEST(Rouge, EmptySideScoresZero) {
  EXPECT_DOUBLE_EQ(rouge_score("", "a summary"), 0.0);
  EXPECT_DOUBLE_EQ(rouge_score("...", "a summary"), 0.0);
  EXPECT_DOUBLE_EQ(rouge_score("a summary", ""), 0.0);
}

TEST(Classification, OneOverMatchedLabels) {
  const std::vector<std::string> classes = {"Location", "City", "Country", "Human"};
  EXPECT_DOUBLE_EQ(classification_score("Location", "Location", classes), 1.0);
  EXPECT_DOUBLE_EQ(classification_score("City or Location", "Location", classes), 0.5);
  EXPECT_DOUBLE_EQ(classification_score("Human", "Location", classes), 0.0);
  EXPECT_DOUBLE_EQ(classification_score("no idea", "Location", classes), 0.0);  // no difflib fallback
}

TEST(Classification, LabelsInsideTheTruthAreDropped) {
  // "Food" is part of the ground truth "Food product", so it does not count against it.
  EXPECT_DOUBLE_EQ(classification_score("Food product", "Food product", {"Food", "Food product", "Product"}),
                   1.0);
}

TEST(Classification, ReproducesTheSkipWhileRemovingQuirk) {
  // Matches [Other, Oth, Ot, Other entity]: removing "Other" skips "Oth", so "Oth" stays: 1/2.
  EXPECT_DOUBLE_EQ(
      classification_score("Other entity", "Other entity", {"Other", "Oth", "Ot", "Other entity"}), 0.5);
}

TEST(Retrieval, ShareOfNumbersNamingTheParagraph) {
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 12"), 0.5);
  EXPECT_DOUBLE_EQ(retrieval_score("12", "Paragraph 12"), 1.0);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 012", "Paragraph 12"), 0.0);  // string comparison
  EXPECT_DOUBLE_EQ(retrieval_score("I do not know", "Paragraph 12"), 0.0);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 12", "no paragraph"), 0.0);
}

TEST(Count, ShareOfNumbersEqualToTheTruth) {
  EXPECT_DOUBLE_EQ(count_score("7", "7"), 1.0);
  EXPECT_DOUBLE_EQ(count_score("There are 7 unique paragraphs out of 10", "7"), 0.5);
  EXPECT_DOUBLE_EQ(count_score("17", "7"), 0.0);
  EXPECT_DOUBLE_EQ(count_score("seven", "7"), 0.0);
}

TEST(Levenshtein, IndelRatio) {
  // LCS("kitten", "sitting") = "ittn": indel distance 13 - 8 = 5, ratio 8/13.
  EXPECT_NEAR(levenshtein_ratio("kitten", "sitting"), 8.0 / 13.0, 1e-12);
  EXPECT_DOUBLE_EQ(levenshtein_ratio("", ""), 1.0);
  EXPECT_DOUBLE_EQ(levenshtein_ratio("abc", ""), 0.0);
  // Code points, not bytes: one substitution in 4 + 4 characters, ratio 6/8.
  EXPECT_DOUBLE_EQ(levenshtein_ratio("café", "cafe"), 0.75);
}

TEST(CodeSim, FirstCodeLineAndRoundedRatio) {
  EXPECT_DOUBLE_EQ(code_sim_score("    return a + b\n}", "    return a + b"), 1.0);
  EXPECT_DOUBLE_EQ(code_sim_score("\n// comment\n```python\nx = 1\n", "x = 1"), 1.0);
  EXPECT_DOUBLE_EQ(code_sim_score("# only a comment", "x = 1"), 0.0);
  EXPECT_DOUBLE_EQ(code_sim_score("", "x = 1"), 0.0);
  // fuzz.ratio rounds 100 * 8/13 = 61.5... to 62.
  EXPECT_DOUBLE_EQ(code_sim_score("kitten", "sitting"), 0.62);
}

TEST(Score, DispatchesByMetric) {
  EvalSample sample;
  sample.metric = Metric::kStringMatchAll;
  sample.answers = {"123", "456"};
  EXPECT_DOUBLE_EQ(score(sample, "123"), 0.5);
  sample.metric = Metric::kStringMatchPart;
  EXPECT_DOUBLE_EQ(score(sample, "123"), 1.0);
}

TEST(Score, LongBenchTakesTheBestAnswer) {
  EvalSample sample;
  sample.task = "longbench/hotpotqa";
  sample.metric = Metric::kQaF1;
  sample.answers = {"Paris", "Paris, France"};
  // vs "paris": P = 1/3, R = 1 -> 0.5; vs "paris france": 0.4. The best is 0.5.
  EXPECT_NEAR(score(sample, "\nParis\nQuestion: what"), 0.5, 1e-12);
  // triviaqa keeps only the first line: "Paris" -> 1.
  sample.task = "longbench/triviaqa";
  EXPECT_DOUBLE_EQ(score(sample, "\nParis\nQuestion: what"), 1.0);
}

}  // namespace
}  // namespace kvshrink::eval
