// samples.jsonl, eval's results: one JSON record per line, appended and flushed as each (sample,
// mode, setting) finishes, so an interrupted run leaves its finished records and at most one torn
// last line.
//
// Every record has sample_id, task, mode (strings), context_length (an integer), score,
// kv_bytes_held and kv_bytes_full (numbers); newer ones kv_bytes_held_compressed and
// kv_bytes_full_compressed (numbers), setting and press (strings; absent in older files: full KV).
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

namespace kvshrink::eval {

// When the file's last line is torn (no '\n' at its end, or not JSON: a write cut by a crash or a
// full disk), cuts the file back to the end of the line before it. Returns the bytes cut (0: none,
// or no file). Throws std::runtime_error when file exists but is not a regular file.
size_t drop_torn_last_line(const std::filesystem::path& file);

// Every record of the file, in order; none when it does not exist. Throws std::runtime_error
// naming the file and line for a line that is not JSON or lacks a field, and when file is not a
// regular file.
std::vector<nlohmann::json> read_records(const std::filesystem::path& file);

}  // namespace kvshrink::eval
