#include "launch/batch/batch_records.h"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>

namespace kvshrink::launch {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kLineIdPrefix = "batch_req_line_";

bool blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

// The envelope of one line; the error, if any, in line.error.
BatchLine parse_line(const std::string& text, int64_t number, std::map<std::string, int64_t>& seen) {
  BatchLine line;
  line.number = number;
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error& e) {
    line.error =
        ApiError(400, fmt::format("line {}: not valid JSON: {}", number, e.what()), "", "invalid_json");
    return line;
  }
  const auto field = [&](const char* name) { return value.is_object() ? value.value(name, json()) : json(); };
  const json custom_id = field("custom_id");
  if (!custom_id.is_string() || custom_id.get<std::string>().empty()) {
    line.error = ApiError(400, fmt::format("line {}: 'custom_id' must be a non-empty string", number),
                          "custom_id", "invalid_custom_id");
    return line;
  }
  const auto [first, inserted] = seen.emplace(custom_id.get<std::string>(), number);
  if (!inserted) {
    line.error = ApiError(400,
                          fmt::format("line {}: custom_id '{}' is already used by line {}", number,
                                      first->first, first->second),
                          "custom_id", "duplicate_custom_id");
    return line;
  }
  line.custom_id = custom_id.get<std::string>();
  const json method = field("method");
  const json url = field("url");
  if (method != "POST") {
    line.error = ApiError(400, fmt::format("'method' must be \"POST\" (got {})", method.dump()), "method",
                          "invalid_method");
  } else if (!url.is_string() || !endpoint_for_path(url.get<std::string>(), line.endpoint)) {
    line.error =
        ApiError(404, fmt::format("unsupported url {} (/v1/completions or /v1/chat/completions)", url.dump()),
                 "url", "invalid_url");
  } else if (!field("body").is_object()) {
    line.error = ApiError(400, "'body' must be a JSON object", "body", "invalid_body");
  } else {
    line.body = std::move(value["body"]);
  }
  return line;
}

std::string random_record_id() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return fmt::format("batch_req_{:016x}{:08x}", salt, counter.fetch_add(1));
}

json line_identity(const BatchLine& line) {
  if (line.custom_id.empty())
    return {{"id", fmt::format("{}{}", kLineIdPrefix, line.number)}, {"custom_id", nullptr}};
  return {{"id", random_record_id()}, {"custom_id", line.custom_id}};
}

}  // namespace

std::vector<BatchLine> read_batch_input(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw std::runtime_error(fmt::format("the batch input '{}' does not exist", path.string()));
  if (!fs::is_regular_file(path, ec))
    throw std::runtime_error(fmt::format("the batch input '{}' is not a regular file", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read '{}': {}", path.string(), std::strerror(errno)));
  std::vector<BatchLine> lines;
  std::map<std::string, int64_t> seen;  // custom_id -> the line that has it
  int64_t number = 0;
  for (std::string text; std::getline(in, text);) {
    ++number;
    if (!blank(text)) lines.push_back(parse_line(text, number, seen));
  }
  if (in.bad())
    throw std::runtime_error(fmt::format("cannot read '{}' (line {})", path.string(), number + 1));
  return lines;
}

json result_record(const BatchLine& line, const json& completion) {
  json record = line_identity(line);
  record["response"] = {
      {"status_code", 200}, {"request_id", completion.value("id", json())}, {"body", completion}};
  record["error"] = nullptr;
  return record;
}

json error_record(const BatchLine& line, const ApiError& error) {
  json record = line_identity(line);
  record["response"] = {{"status_code", error.status}, {"request_id", nullptr}, {"body", error_body(error)}};
  record["error"] = {{"code", error.code.empty() ? error.type : error.code}, {"message", error.what()}};
  return record;
}

RecordKey record_key(const json& record) {
  if (!record.is_object() || !record.contains("response") || !record.contains("custom_id"))
    throw std::invalid_argument("not a batch result record (no 'custom_id' and 'response')");
  const json& custom_id = record["custom_id"];
  if (custom_id.is_string() && !custom_id.get<std::string>().empty())
    return {custom_id.get<std::string>(), 0};
  const json id = record.value("id", json());
  if (custom_id.is_null() && id.is_string()) {
    const auto text = id.get<std::string>();
    int64_t number = 0;
    const char* end = text.data() + text.size();
    if (text.starts_with(kLineIdPrefix)) {
      const auto parsed = std::from_chars(text.data() + kLineIdPrefix.size(), end, number);
      if (parsed.ec == std::errc() && parsed.ptr == end && number > 0) return {"", number};
    }
  }
  throw std::invalid_argument("a record without a custom_id must have the id 'batch_req_line_N'");
}

}  // namespace kvshrink::launch
