// The tables of an eval run, from every record of samples.jsonl (eval/records_file.h): per (task,
// mode, context length, setting) the mean score and KV held beside full KV's score, as
// summary.json rows and a results.md table, headed by the average over the tasks the model does
// at full KV.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvshrink::eval {

struct ResultTables {
  nlohmann::json summary;  // summary.json: an array of rows
  std::string markdown;    // results.md: the headline averages, then the per-task table
};

// records must have passed read_records' checks.
ResultTables summarize(const std::vector<nlohmann::json>& records);

}  // namespace kvshrink::eval
