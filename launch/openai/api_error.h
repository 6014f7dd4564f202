// An error a client gets back, OpenAI-shaped: {"error": {"message", "type", "param", "code"}} with
// its HTTP status (400 malformed, 401 key, 404 path or model, 413 body, 422 values the engine
// cannot run, 429 queue full, 503 loading or shutting down). Batch result lines carry the same body.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace kvshrink::launch {

struct ApiError : std::runtime_error {
  // type "" = the usual one for the status (invalid_request_error, authentication_error, ...).
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "",
           std::string type = "");
  int status;
  std::string type;
  std::string param;  // the request field at fault ("" = none)
  std::string code;   // a short machine-readable reason ("" = none)
};

nlohmann::json error_body(const ApiError& error);

}  // namespace kvshrink::launch
