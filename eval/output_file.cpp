#include "eval/output_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace kvshrink::eval {
namespace {

[[noreturn]] void fail(const std::filesystem::path& path, int error) {
  throw std::runtime_error(fmt::format("cannot write '{}': {}", path.string(), std::strerror(error)));
}

std::FILE* open_or_throw(const std::filesystem::path& path, const char* mode) {
  std::FILE* file = std::fopen(path.c_str(), mode);
  if (file == nullptr) fail(path, errno);
  return file;
}

// Writes text and flushes; errno of the first failure, 0 when it all reached the system.
int write_and_flush(std::FILE* file, std::string_view text) {
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), file) != text.size() || std::fflush(file) != 0) {
    return errno != 0 ? errno : EIO;
  }
  return 0;
}

}  // namespace

void write_file(const std::filesystem::path& path, std::string_view text) {
  std::FILE* file = open_or_throw(path, "w");
  const int error = write_and_flush(file, text);
  if (std::fclose(file) != 0 && error == 0) fail(path, errno);
  if (error != 0) fail(path, error);
}

AppendFile::AppendFile(const std::filesystem::path& path) : path_(path), file_(open_or_throw(path, "a")) {}

AppendFile::~AppendFile() {
  if (file_ != nullptr) std::fclose(file_);
}

void AppendFile::append_line(std::string_view line) {
  std::string text(line);
  text += '\n';
  const int error = write_and_flush(file_, text);
  if (error != 0) fail(path_, error);
}

void AppendFile::close() {
  if (file_ == nullptr) return;
  std::FILE* file = file_;
  file_ = nullptr;
  if (std::fclose(file) != 0) fail(path_, errno);
}

}  // namespace kvshrink::eval
