#include "launch/openai/api_error.h"

namespace kvshrink::launch {
namespace {

std::string type_for(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 500:
      return "internal_error";
    case 503:
      return "service_unavailable_error";
    default:
      return "invalid_request_error";
  }
}

}  // namespace

ApiError::ApiError(int status, const std::string& message, std::string param, std::string code,
                   std::string type)
    : std::runtime_error(message),
      status(status),
      type(type.empty() ? type_for(status) : std::move(type)),
      param(std::move(param)),
      code(std::move(code)) {}

nlohmann::json error_body(const ApiError& error) {
  const auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json() : nlohmann::json(s); };
  return {{"error",
           {{"message", error.what()},
            {"type", error.type},
            {"param", or_null(error.param)},
            {"code", or_null(error.code)}}}};
}

}  // namespace kvshrink::launch
