// Result files written so that a failure is never silent: every write is flushed and checked, and
// a failure (a full disk, a folder in the file's place) throws std::runtime_error naming the file
// and the system's reason.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string_view>

namespace kvshrink::eval {

// Writes text to path (replacing it), flushed and closed.
void write_file(const std::filesystem::path& path, std::string_view text);

// A file that lines are appended to, each one flushed as it is written (samples.jsonl: a record is
// on disk once append_line returns).
class AppendFile {
 public:
  explicit AppendFile(const std::filesystem::path& path);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  // Writes line and '\n', then flushes.
  void append_line(std::string_view line);
  // Flushes and closes; throws when that fails.
  void close();

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace kvshrink::eval
