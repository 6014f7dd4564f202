// results.jsonl of `kvshrink batch`: one record a line (batch_records.h), appended and flushed as
// each line completes, so a run cut short (SIGTERM, a crash, a full disk) leaves its finished
// records and at most one torn last line. Opening it again drops that torn line and reads which
// lines are done; a resumed run skips them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "eval/output_file.h"
#include "launch/batch/batch_records.h"

namespace kvshrink::launch {

class BatchResultsFile {
 public:
  // Opens (or creates) path for appending after dropping a torn last line. Throws
  // std::runtime_error naming the file and line for a line that is not a batch record, and when
  // the file cannot be read or written.
  explicit BatchResultsFile(const std::filesystem::path& path);

  size_t torn_bytes() const { return torn_bytes_; }  // what opening cut off (0: nothing)
  int64_t records() const;                           // in the file now
  // Whether the file holds line's record (by custom_id, or by line number for a line without one).
  bool has(const BatchLine& line) const;

  // Any thread: writes record as one line and flushes it; throws std::runtime_error when that
  // fails (the record does not count as written).
  void append(const BatchLine& line, const nlohmann::json& record);

 private:
  mutable std::mutex mutex_;
  size_t torn_bytes_ = 0;
  std::set<std::string> custom_ids_;
  std::set<int64_t> line_numbers_;  // of records without a custom_id
  int64_t records_ = 0;
  eval::AppendFile file_;
};

}  // namespace kvshrink::launch
