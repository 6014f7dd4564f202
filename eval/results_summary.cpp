#include "eval/results_summary.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>

namespace kvshrink::eval {
namespace {

using nlohmann::json;

struct Aggregate {
  double score = 0.0, kv_share = 0.0;
  int64_t count = 0;
};
using Key = std::tuple<std::string, std::string, int64_t, std::string>;  // task, mode, length, label

struct Groups {
  std::map<Key, Aggregate> by_key;
  std::map<std::string, Aggregate> full_by_task;  // full-KV score over every length and mode
  std::map<std::string, std::string> method_of;   // label -> press
};

Groups group(const std::vector<json>& records) {
  Groups groups;
  for (const auto& r : records) {
    const std::string label = r.value("setting", "full KV");
    auto& g = groups.by_key[{r["task"], r["mode"], r["context_length"], label}];
    g.score += r["score"].get<double>();
    // KV held right after compression (the budget at work); older records: at the end
    const bool has_compressed = r.contains("kv_bytes_full_compressed");
    const double full = r[has_compressed ? "kv_bytes_full_compressed" : "kv_bytes_full"].get<double>();
    const double held = r[has_compressed ? "kv_bytes_held_compressed" : "kv_bytes_held"].get<double>();
    g.kv_share += full > 0 ? held / full : 1.0;
    ++g.count;
    groups.method_of[label] = r.value("press", "none");
    if (label == "full KV") {
      auto& f = groups.full_by_task[r["task"]];
      f.score += r["score"].get<double>();
      ++f.count;
    }
  }
  return groups;
}

// Tasks the model cannot do at full KV (mean < 5 %) stay out of the headline average.
std::set<std::string> informative_tasks(const Groups& groups) {
  std::set<std::string> informative;
  for (const auto& [task, f] : groups.full_by_task) {
    if (f.score / f.count >= 0.05) informative.insert(task);
  }
  return informative;
}

using AverageKey = std::tuple<std::string, int64_t, std::string>;  // mode, length, label
using Averages = std::map<AverageKey, std::array<double, 4>>;      // score, kv share, full score, tasks

std::string headline(const std::set<std::string>& informative, const Averages& averages) {
  std::string text = fmt::format(
      "Average over the tasks the model does at full KV ({}); % of full = average score / average full-KV "
      "score.\n\n"
      "| mode | context length | setting | tasks | KV held | score | score, full KV | % of full |\n"
      "|---|---:|---|---:|---:|---:|---:|---:|\n",
      informative.empty() ? std::string("none") : fmt::format("{}", fmt::join(informative, ", ")));
  for (const auto& [key, a] : averages) {
    const auto& [mode, length, label] = key;
    text += fmt::format("| {} | {} | {} | {:.0f} | {:.1f}% | {:.1f} | {:.1f} | {} |\n", mode, length, label,
                        a[3], 100 * a[1] / a[3], 100 * a[0] / a[3], 100 * a[2] / a[3],
                        a[2] > 0 ? fmt::format("{:.0f}%", 100 * a[0] / a[2]) : "-");
  }
  return text;
}

}  // namespace

ResultTables summarize(const std::vector<json>& records) {
  const Groups groups = group(records);
  const std::set<std::string> informative = informative_tasks(groups);
  ResultTables tables{json::array(), ""};
  std::string table =
      "| task | mode | context length | samples | score, full KV | setting | KV held | score | % of full |\n"
      "|---|---|---:|---:|---:|---|---:|---:|---:|\n";
  Averages averages;
  for (const auto& [key, g] : groups.by_key) {
    const auto& [task, mode, length, label] = key;
    const double score = g.score / g.count;
    const double kv_share = g.kv_share / g.count;
    const auto full_it = groups.by_key.find({task, mode, length, "full KV"});
    const double full = full_it == groups.by_key.end() ? -1.0 : full_it->second.score / full_it->second.count;
    const std::string of_full = full > 0 ? fmt::format("{:.0f}%", 100 * score / full) : "-";
    tables.summary.push_back({{"task", task},
                              {"mode", mode},
                              {"context_length", length},
                              {"setting", label},
                              {"press", groups.method_of.at(label)},
                              {"samples", g.count},
                              {"score", score},
                              {"score_full_kv", full},
                              {"kv_share", kv_share}});
    table += fmt::format("| {} | {} | {} | {} | {} | {} | {:.1f}% | {:.1f} | {} |\n", task, mode, length,
                         g.count, full >= 0 ? fmt::format("{:.1f}", 100 * full) : "-", label, 100 * kv_share,
                         100 * score, of_full);
    if (informative.count(task) && full >= 0) {
      auto& a = averages[{mode, length, label}];
      a[0] += score, a[1] += kv_share, a[2] += full, a[3] += 1;
    }
  }
  tables.markdown = headline(informative, averages) + "\n" + table;
  return tables;
}

}  // namespace kvshrink::eval
