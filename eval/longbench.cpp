// LongBench reader: official templates, generation lengths and metrics per dataset, JSONL parsing with
// file:line errors, middle truncation and prediction post-processing.
#include "eval/longbench.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace kvshrink::eval {
namespace {

// Templates as in THUDM/LongBench config/dataset2prompt.json (the revision with every v1 dataset,
// where narrativeqa reads "as concisely"; an older revision had the typo "asconcisely").
// Max lengths from config/dataset2maxlen.json, metrics from eval.py's dataset2metric, chat-template
// exceptions from pred.py, first-line post-processing from eval.py.
std::vector<LongBenchDataset> make_datasets() {
  const std::string qa_passages =
      "Answer the question based on the given passages. Only give me the answer and do not output any other "
      "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
      "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:";
  return {
      {"narrativeqa",
       "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
       "question as concisely as you can, using a single phrase if possible. Do not provide any explanation."
       "\n\nStory: {context}\n\nNow, answer the question based on the story as concisely as you can, using a "
       "single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, Metric::kQaF1, true, false},
      {"qasper",
       "You are given a scientific article and a question. Answer the question as concisely as you can, "
       "using "
       "a single phrase or sentence if possible. If the question cannot be answered based on the information "
       "in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", "
       "\"no\", "
       "or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question "
       "based on the above article as concisely as you can, using a single phrase or sentence if possible. "
       "If "
       "the question cannot be answered based on the information in the article, write \"unanswerable\". If "
       "the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any "
       "explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, Metric::kQaF1, true, false},
      {"multifieldqa_en",
       "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based "
       "on the above text, only give me the answer and do not output any other words.\n\nQuestion: "
       "{input}\nAnswer:",
       64, Metric::kQaF1, true, false},
      {"hotpotqa", qa_passages, 32, Metric::kQaF1, true, false},
      {"2wikimqa", qa_passages, 32, Metric::kQaF1, true, false},
      {"musique", qa_passages, 32, Metric::kQaF1, true, false},
      {"gov_report",
       "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n"
       "{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
       512, Metric::kRougeL, true, false},
      {"qmsum",
       "You are given a meeting transcript and a query containing a question or instruction. Answer the "
       "query "
       "in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above "
       "meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
       512, Metric::kRougeL, true, false},
      {"multi_news",
       "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\n"
       "Now, write a one-page summary of all the news.\n\nSummary:",
       512, Metric::kRougeL, true, false},
      {"trec",
       "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n"
       "{input}",
       64, Metric::kClassification, false, true},
      {"triviaqa",
       "Answer the question based on the given passage. Only give me the answer and do not output any other "
       "words. The following are some examples.\n\n{context}\n\n{input}",
       32, Metric::kQaF1, false, true},
      {"samsum",
       "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n"
       "{input}",
       128, Metric::kRougeL, false, true},
      {"passage_count",
       "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
       "carefully read these paragraphs and determine how many unique paragraphs there are after removing "
       "duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\n"
       "Please enter the final count of unique paragraphs after removing duplicates. The output format "
       "should "
       "only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
       32, Metric::kCount, true, false},
      {"passage_retrieval_en",
       "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
       "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the "
       "number "
       "of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", "
       "\"Paragraph 2\", etc.\n\nThe answer is: ",
       32, Metric::kRetrieval, true, false},
      {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64,
       Metric::kCodeSimilarity, false, false},
      {"repobench-p", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
       Metric::kCodeSimilarity, false, false},
  };
}

constexpr std::string_view kChineseDatasets[] = {"multifieldqa_zh", "dureader", "vcsum", "lsht",
                                                 "passage_retrieval_zh"};

// Replaces every {input} of a template piece (str.format fills each placeholder once, in one pass).
std::string fill_input(std::string_view piece, const std::string& input) {
  constexpr std::string_view kInput = "{input}";
  std::string out;
  size_t start = 0;
  for (size_t at = piece.find(kInput); at != std::string_view::npos; at = piece.find(kInput, start)) {
    out.append(piece.substr(start, at - start));
    out.append(input);
    start = at + kInput.size();
  }
  out.append(piece.substr(start));
  return out;
}

std::string location(const std::filesystem::path& file, size_t line) {
  return file.string() + ":" + std::to_string(line) + ": ";
}

std::vector<std::string> string_list(const nlohmann::json& value, const char* field,
                                     const std::string& where) {
  if (!value.is_array()) throw std::runtime_error(where + "field '" + field + "' must be a list of strings");
  std::vector<std::string> out;
  for (const auto& item : value) {
    if (!item.is_string())
      throw std::runtime_error(where + "field '" + field + "' must be a list of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

const nlohmann::json& required(const nlohmann::json& record, const char* field, const std::string& where) {
  auto it = record.find(field);
  if (it == record.end()) throw std::runtime_error(where + "missing field '" + field + "'");
  return *it;
}

// One JSONL line to a sample; `where` prefixes every error.
EvalSample parse_record(const std::string& line, const LongBenchDataset& config, const std::string& where) {
  nlohmann::json record;
  try {
    record = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& error) {
    throw std::runtime_error(where + "invalid JSON: " + error.what());
  }
  if (!record.is_object()) throw std::runtime_error(where + "record is not a JSON object");
  const auto& context = required(record, "context", where);
  const auto& input = required(record, "input", where);
  if (!context.is_string()) throw std::runtime_error(where + "field 'context' must be a string");
  if (!input.is_string()) throw std::runtime_error(where + "field 'input' must be a string");
  for (const char* field : {"dataset", "language", "_id"})
    if (record.contains(field) && !record[field].is_string())
      throw std::runtime_error(where + "field '" + field + "' must be a string");
  if (record.contains("length") && !record["length"].is_number())
    throw std::runtime_error(where + "field 'length' must be a number");

  EvalSample sample;
  sample.task = "longbench/" + config.name;
  sample.metric = config.metric;
  sample.max_new_tokens = config.max_new_tokens;
  sample.answers = string_list(required(record, "answers", where), "answers", where);
  if (sample.answers.empty()) throw std::runtime_error(where + "field 'answers' is empty");
  const auto& classes = required(record, "all_classes", where);
  if (!classes.is_null()) sample.all_classes = string_list(classes, "all_classes", where);
  if (config.metric == Metric::kClassification && sample.all_classes.empty())
    throw std::runtime_error(where + "field 'all_classes' must list the labels for " + config.name);
  if (config.metric == Metric::kRetrieval)
    for (const auto& answer : sample.answers)
      if (answer.find("Paragraph ") == std::string::npos)
        throw std::runtime_error(where + "answer '" + answer + "' does not name a \"Paragraph N\"");

  // Split the template at {context}: the head and the record context are the compressible part.
  const std::string& form = config.prompt_template;
  const size_t at = form.find("{context}");
  const std::string input_text = input.get<std::string>();
  sample.context = fill_input(std::string_view(form).substr(0, at), input_text) + context.get<std::string>();
  sample.question =
      fill_input(std::string_view(form).substr(at + std::string_view("{context}").size()), input_text);
  return sample;
}

}  // namespace

const std::vector<LongBenchDataset>& longbench_datasets() {
  static const std::vector<LongBenchDataset> datasets = make_datasets();
  return datasets;
}

const LongBenchDataset& longbench_dataset(std::string_view name) {
  std::string_view base = name;
  if (base.size() > 2 && base.substr(base.size() - 2) == "_e") base.remove_suffix(2);  // LongBench-E
  for (const auto& dataset : longbench_datasets())
    if (dataset.name == base) return dataset;
  for (std::string_view chinese : kChineseDatasets)
    if (chinese == base)
      throw std::runtime_error("LongBench dataset '" + std::string(name) +
                               "' is Chinese; its metrics (jieba-based) are not implemented");
  std::string known;
  for (const auto& dataset : longbench_datasets()) known += (known.empty() ? "" : ", ") + dataset.name;
  throw std::runtime_error("unknown LongBench dataset '" + std::string(name) + "' (known: " + known + ")");
}

std::vector<EvalSample> read_longbench(const std::filesystem::path& folder, const std::string& dataset,
                                       size_t max_samples) {
  const LongBenchDataset& config = longbench_dataset(dataset);
  const std::filesystem::path file = folder / (dataset + ".jsonl");
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open LongBench file");
  std::vector<EvalSample> samples;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
    samples.push_back(parse_record(line, config, location(file, number)));
    if (max_samples > 0 && samples.size() == max_samples) break;
  }
  return samples;
}

std::vector<int32_t> truncate_middle(const std::vector<int32_t>& tokens, size_t max_tokens) {
  if (max_tokens < 2) throw std::invalid_argument("truncate_middle: max_tokens must be at least 2");
  if (tokens.size() <= max_tokens) return tokens;
  const size_t half = max_tokens / 2;
  std::vector<int32_t> out(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(half));
  out.insert(out.end(), tokens.end() - static_cast<std::ptrdiff_t>(half), tokens.end());
  return out;
}

std::string longbench_postprocess(std::string_view dataset, std::string_view prediction) {
  if (dataset.substr(0, 10) == "longbench/") dataset.remove_prefix(10);
  if (dataset.size() > 2 && dataset.substr(dataset.size() - 2) == "_e") dataset.remove_suffix(2);
  if (dataset != "trec" && dataset != "triviaqa" && dataset != "samsum" && dataset != "lsht")
    return std::string(prediction);
  const size_t start = prediction.find_first_not_of('\n');
  if (start == std::string_view::npos) return "";
  return std::string(prediction.substr(start, prediction.find('\n', start) - start));
}

}  // namespace kvshrink::eval
