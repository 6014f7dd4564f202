#include "launch/batch/batch_results_file.h"

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>

#include "eval/records_file.h"

namespace kvshrink::launch {

using nlohmann::json;

BatchResultsFile::BatchResultsFile(const std::filesystem::path& path)
    : torn_bytes_(eval::drop_torn_last_line(path)), file_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read '{}'", path.string()));
  int64_t number = 0;
  for (std::string text; std::getline(in, text);) {
    ++number;
    if (text.empty()) continue;
    try {
      const RecordKey key = record_key(json::parse(text));
      if (key.custom_id.empty()) {
        line_numbers_.insert(key.line_number);
      } else {
        custom_ids_.insert(key.custom_id);
      }
      ++records_;
    } catch (const std::exception& e) {  // json::parse_error, std::invalid_argument
      throw std::runtime_error(fmt::format(
          "'{}' line {}: not a batch result record ({}); fix or delete that line, or write to another file",
          path.string(), number, dynamic_cast<const json::parse_error*>(&e) ? "not JSON" : e.what()));
    }
  }
  if (in.bad()) throw std::runtime_error(fmt::format("cannot read '{}'", path.string()));
}

int64_t BatchResultsFile::records() const {
  std::lock_guard lock(mutex_);
  return records_;
}

bool BatchResultsFile::has(const BatchLine& line) const {
  std::lock_guard lock(mutex_);
  return line.custom_id.empty() ? line_numbers_.contains(line.number) : custom_ids_.contains(line.custom_id);
}

void BatchResultsFile::append(const BatchLine& line, const json& record) {
  const std::string text = record.dump(-1, ' ', false, json::error_handler_t::replace);
  std::lock_guard lock(mutex_);
  file_.append_line(text);
  if (line.custom_id.empty()) {
    line_numbers_.insert(line.number);
  } else {
    custom_ids_.insert(line.custom_id);
  }
  ++records_;
}

}  // namespace kvshrink::launch
