#include "eval/records_file.h"

#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace kvshrink::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The whole file; "" when it does not exist.
std::string read_text(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return "";
  if (!fs::is_regular_file(file, ec)) {
    throw std::runtime_error(fmt::format("'{}' is not a regular file", file.string()));
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) throw std::runtime_error(fmt::format("cannot read '{}'", file.string()));
  return text.str();
}

struct Field {
  const char* name;
  bool (json::*has_type)() const noexcept;
  const char* type;
};

constexpr std::array<Field, 7> kRequired = {{{"sample_id", &json::is_string, "a string"},
                                             {"task", &json::is_string, "a string"},
                                             {"mode", &json::is_string, "a string"},
                                             {"context_length", &json::is_number_integer, "an integer"},
                                             {"score", &json::is_number, "a number"},
                                             {"kv_bytes_held", &json::is_number, "a number"},
                                             {"kv_bytes_full", &json::is_number, "a number"}}};
constexpr std::array<Field, 4> kOptional = {{{"kv_bytes_held_compressed", &json::is_number, "a number"},
                                             {"kv_bytes_full_compressed", &json::is_number, "a number"},
                                             {"setting", &json::is_string, "a string"},
                                             {"press", &json::is_string, "a string"}}};

// Throws std::invalid_argument for a record that is not an object or lacks a field.
void check_record(const json& record) {
  if (!record.is_object()) throw std::invalid_argument("not a JSON object");
  for (const auto& f : kRequired) {
    const auto it = record.find(f.name);
    if (it == record.end() || !((*it).*f.has_type)()) {
      throw std::invalid_argument(fmt::format("'{}' is missing or not {}", f.name, f.type));
    }
  }
  for (const auto& f : kOptional) {
    const auto it = record.find(f.name);
    if (it != record.end() && !((*it).*f.has_type)()) {
      throw std::invalid_argument(fmt::format("'{}' is not {}", f.name, f.type));
    }
  }
  if (record.contains("kv_bytes_held_compressed") != record.contains("kv_bytes_full_compressed")) {
    throw std::invalid_argument("only one of 'kv_bytes_held_compressed' and 'kv_bytes_full_compressed'");
  }
}

}  // namespace

size_t drop_torn_last_line(const fs::path& file) {
  const std::string text = read_text(file);
  if (text.empty()) return 0;
  const bool ends_line = text.back() == '\n';
  const size_t end = ends_line ? text.size() - 1 : text.size();  // of the last line, '\n' excluded
  const size_t newline = end == 0 ? std::string::npos : text.rfind('\n', end - 1);
  const size_t start = newline == std::string::npos ? 0 : newline + 1;
  // A last line with its '\n' is torn too when it is not JSON (cut inside an earlier write).
  if (ends_line && (start == end || json::accept(text.begin() + start, text.begin() + end))) return 0;
  fs::resize_file(file, start);
  return text.size() - start;
}

std::vector<json> read_records(const fs::path& file) {
  std::istringstream in(read_text(file));
  std::vector<json> records;
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    try {
      records.push_back(json::parse(line));
      check_record(records.back());
    } catch (const json::parse_error&) {
      throw std::runtime_error(
          fmt::format("'{}' line {}: not a JSON record (fix or delete that line)", file.string(), number));
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(
          fmt::format("'{}' line {}: {} (fix or delete that line)", file.string(), number, e.what()));
    }
  }
  return records;
}

}  // namespace kvshrink::eval
