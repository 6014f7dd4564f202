// LongBench reader on fixture JSONL files written by the test: templates, context/question split,
// generation lengths, metric mapping, errors with file and line; truncation and post-processing.
#include "eval/longbench.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "eval/eval_sample.h"

namespace kvshrink::eval {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class LongBenchReader : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() / ("kvshrink_longbench_" + std::to_string(::getpid()) + "_" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(folder_);
    fs::create_directories(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }

  void write(const std::string& name, const std::string& text) { std::ofstream(folder_ / name) << text; }

  fs::path folder_;
};

const char* kQasper =
    R"({"input": "What is X?", "context": "Article body.", "answers": ["a method", "unanswerable"], )"
    R"("length": 3, "dataset": "qasper", "language": "en", "all_classes": null, "_id": "q1"})"
    "\n";
const char* kTrec = R"({"input": "Where is Rome?", "context": "Question: What is {input}?\nType: Other", )"
                    R"("answers": ["Location"], "length": 9, "dataset": "trec", "language": "en", )"
                    R"("all_classes": ["Location", "Other", "Human"], "_id": "t1"})"
                    "\n";
const char* kLcc =
    R"({"input": "", "context": "def add(a, b):\n", "answers": ["    return a + b"], "length": 4, )"
    R"("dataset": "lcc", "language": "python", "all_classes": null, "_id": "l1"})"
    "\n";

std::string passage_count_line(int id, const std::string& answer) {
  return R"({"input": "", "context": "Paragraph 1: x\n\nParagraph 2: x", "answers": [")" + answer +
         R"("], "length": 6, "dataset": "passage_count", "language": "en", "all_classes": null, "_id": "p)" +
         std::to_string(id) + "\"}\n";
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The error message of what `fn` throws, as std::runtime_error.
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST_F(LongBenchReader, QasperTemplateSplitAtContext) {
  write("qasper.jsonl", kQasper);
  const auto samples = read_longbench(folder_, "qasper");
  ASSERT_EQ(samples.size(), 1u);
  const EvalSample& s = samples[0];
  EXPECT_EQ(s.task, "longbench/qasper");
  EXPECT_EQ(s.metric, Metric::kQaF1);
  EXPECT_EQ(s.max_new_tokens, 128);
  EXPECT_EQ(s.answers, (std::vector<std::string>{"a method", "unanswerable"}));
  EXPECT_TRUE(s.all_classes.empty());
  EXPECT_TRUE(s.context.starts_with("You are given a scientific article and a question."));
  EXPECT_TRUE(s.context.ends_with("Do not provide any explanation.\n\nArticle: Article body."));
  EXPECT_TRUE(s.question.starts_with("\n\n Answer the question based on the above article"));
  EXPECT_TRUE(s.question.ends_with("Do not provide any explanation.\n\nQuestion: What is X?\n\nAnswer:"));
}

TEST_F(LongBenchReader, TrecPromptIsExactAndContextIsNotFormatted) {
  write("trec.jsonl", kTrec);
  const auto samples = read_longbench(folder_, "trec");
  ASSERT_EQ(samples.size(), 1u);
  const EvalSample& s = samples[0];
  EXPECT_EQ(s.context,
            "Please determine the type of the question below. Here are some examples of questions.\n\n"
            "Question: What is {input}?\nType: Other");
  EXPECT_EQ(s.question, "\nWhere is Rome?");
  EXPECT_EQ(s.metric, Metric::kClassification);
  EXPECT_EQ(s.max_new_tokens, 64);
  EXPECT_EQ(s.all_classes, (std::vector<std::string>{"Location", "Other", "Human"}));
  // trec keeps the first line of the prediction before scoring.
  EXPECT_DOUBLE_EQ(score(s, "Location\nQuestion: Who is Other?"), 1.0);
}

TEST_F(LongBenchReader, PassageCountHasNoInputAndHonoursMaxSamples) {
  write("passage_count.jsonl",
        passage_count_line(1, "2") + "\n" + passage_count_line(2, "3") + passage_count_line(3, "4"));
  const auto samples = read_longbench(folder_, "passage_count", 2);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[1].answers, std::vector<std::string>{"3"});
  EXPECT_EQ(samples[0].metric, Metric::kCount);
  EXPECT_EQ(samples[0].max_new_tokens, 32);
  EXPECT_TRUE(samples[0].context.ends_with("in total?\n\nParagraph 1: x\n\nParagraph 2: x"));
  EXPECT_EQ(
      samples[0].question,
      "\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format "
      "should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ");
  EXPECT_EQ(read_longbench(folder_, "passage_count").size(), 3u);
}

TEST_F(LongBenchReader, LccCodeCompletion) {
  write("lcc.jsonl", kLcc);
  const auto samples = read_longbench(folder_, "lcc");
  ASSERT_EQ(samples.size(), 1u);
  const EvalSample& s = samples[0];
  EXPECT_EQ(s.context + s.question,
            "Please complete the code given below. \ndef add(a, b):\nNext line of code:\n");
  EXPECT_EQ(s.question, "Next line of code:\n");
  EXPECT_EQ(s.metric, Metric::kCodeSimilarity);
  EXPECT_EQ(s.max_new_tokens, 64);
  EXPECT_DOUBLE_EQ(score(s, "    return a + b\n\ndef sub(a, b):"), 1.0);
}

TEST_F(LongBenchReader, MalformedLineNamesFileAndLine) {
  write("qasper.jsonl", std::string(kQasper) + "\n{not json\n");
  const std::string message = error_of([&] { read_longbench(folder_, "qasper"); });
  EXPECT_TRUE(has(message, "qasper.jsonl:3: invalid JSON")) << message;
}

TEST_F(LongBenchReader, MissingOrWrongFieldsAreErrors) {
  write("qasper.jsonl", R"({"input": "q", "context": "c", "all_classes": null})"
                        "\n");
  std::string message = error_of([&] { read_longbench(folder_, "qasper"); });
  EXPECT_TRUE(has(message, "qasper.jsonl:1: missing field 'answers'")) << message;
  write("qasper.jsonl", R"({"input": "q", "context": 5, "answers": ["a"], "all_classes": null})"
                        "\n");
  message = error_of([&] { read_longbench(folder_, "qasper"); });
  EXPECT_TRUE(has(message, "qasper.jsonl:1: field 'context' must be a string")) << message;
  write("trec.jsonl", R"({"input": "q", "context": "c", "answers": ["Location"], "all_classes": null})"
                      "\n");
  message = error_of([&] { read_longbench(folder_, "trec"); });
  EXPECT_TRUE(has(message, "trec.jsonl:1: field 'all_classes'")) << message;
}

TEST_F(LongBenchReader, UnknownDatasetAndMissingFile) {
  EXPECT_TRUE(
      has(error_of([&] { read_longbench(folder_, "nosuchset"); }), "unknown LongBench dataset 'nosuchset'"));
  EXPECT_TRUE(has(error_of([&] { read_longbench(folder_, "dureader"); }), "Chinese"));
  EXPECT_TRUE(has(error_of([&] { read_longbench(folder_, "qasper"); }), "qasper.jsonl: cannot open"));
}

TEST(LongBenchDatasets, EnglishSetWithOfficialLengthsAndMetrics) {
  EXPECT_EQ(longbench_datasets().size(), 16u);
  for (const auto& dataset : longbench_datasets())
    EXPECT_TRUE(has(dataset.prompt_template, "{context}")) << dataset.name;
  EXPECT_EQ(longbench_dataset("narrativeqa").max_new_tokens, 128);
  EXPECT_EQ(longbench_dataset("multifieldqa_en").max_new_tokens, 64);
  EXPECT_EQ(longbench_dataset("gov_report").metric, Metric::kRougeL);
  EXPECT_EQ(longbench_dataset("multi_news").max_new_tokens, 512);
  EXPECT_EQ(longbench_dataset("samsum").max_new_tokens, 128);
  EXPECT_EQ(longbench_dataset("triviaqa").metric, Metric::kQaF1);
  EXPECT_EQ(longbench_dataset("passage_retrieval_en").metric, Metric::kRetrieval);
  EXPECT_EQ(longbench_dataset("repobench-p").metric, Metric::kCodeSimilarity);
  EXPECT_EQ(longbench_dataset("qasper_e").name, "qasper");  // LongBench-E
  EXPECT_FALSE(longbench_dataset("lcc").chat_template);
  EXPECT_TRUE(longbench_dataset("hotpotqa").chat_template);
}

TEST(TruncateMiddle, KeepsFirstAndLastHalf) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(truncate_middle(tokens, 4), (std::vector<int32_t>{1, 2, 9, 10}));
  EXPECT_EQ(truncate_middle(tokens, 5), (std::vector<int32_t>{1, 2, 9, 10}));  // int(5 / 2) = 2 each side
  EXPECT_EQ(truncate_middle(tokens, 9), (std::vector<int32_t>{1, 2, 3, 4, 7, 8, 9, 10}));
  EXPECT_EQ(truncate_middle(tokens, 10), tokens);
  EXPECT_EQ(truncate_middle(tokens, 100), tokens);
  EXPECT_THROW(truncate_middle(tokens, 1), std::invalid_argument);
}

TEST(Postprocess, FirstLineForFewShotDatasets) {
  EXPECT_EQ(longbench_postprocess("trec", "\n\nLocation\nQuestion: more"), "Location");
  EXPECT_EQ(longbench_postprocess("longbench/samsum", "A summary.\nDialogue: x"), "A summary.");
  EXPECT_EQ(longbench_postprocess("triviaqa_e", "Paris"), "Paris");
  EXPECT_EQ(longbench_postprocess("lsht", "\n"), "");
  EXPECT_EQ(longbench_postprocess("lcc", "\nx = 1\ny = 2"), "\nx = 1\ny = 2");
}

}  // namespace
}  // namespace kvshrink::eval
