// The OpenAI batch file format (as vLLM's run_batch reads and writes it), one JSON object a line.
//
// In:  {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
// Out: {"id": "batch_req_...", "custom_id": "r1",
//       "response": {"status_code": 200, "request_id": "chatcmpl-...", "body": {...completion...}},
//       "error": null}
//      a refused line: "response": {"status_code": 4xx, "request_id": null, "body": {"error": {...}}},
//       "error": {"code": ..., "message": ...}
//
// Every input line gets exactly one record, named by its custom_id. A line without a custom_id of
// its own (not JSON, no custom_id, or one an earlier line already has) gets an error record with
// "custom_id": null and "id": "batch_req_line_N" (N its line number), so a resumed run knows it
// too. Blank lines are skipped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "launch/openai/api_error.h"
#include "launch/openai/completion_request.h"

namespace kvshrink::launch {

struct BatchLine {
  int64_t number = 0;     // in the input file, from 1
  std::string custom_id;  // "" when the line has none of its own
  Endpoint endpoint = Endpoint::kCompletions;
  nlohmann::json body;
  std::optional<ApiError> error;  // the line is refused: its record is this error
};

// Every non-blank line of the input, each checked for the envelope (JSON, custom_id, method, url,
// body an object; the body itself is checked later, with the tokenizer). Throws
// std::runtime_error naming the file when it cannot be read.
std::vector<BatchLine> read_batch_input(const std::filesystem::path& path);

// The record of a line that ran: status 200 and the completion.
nlohmann::json result_record(const BatchLine& line, const nlohmann::json& completion);
// The record of a line refused (or failed in the engine) with error.
nlohmann::json error_record(const BatchLine& line, const ApiError& error);

// What a record is known by in the results file: its custom_id, or for a line without one its line
// number (from "batch_req_line_N"). Throws std::invalid_argument for a JSON value that is not a
// batch record.
struct RecordKey {
  std::string custom_id;    // "" when the line had none
  int64_t line_number = 0;  // with no custom_id
};
RecordKey record_key(const nlohmann::json& record);

}  // namespace kvshrink::launch
