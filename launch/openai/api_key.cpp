#include "launch/openai/api_key.h"

#include <cstddef>

namespace kvshrink::launch {

bool api_key_matches(std::string_view key, std::string_view header) {
  if (key.empty()) return true;
  constexpr std::string_view kScheme = "Bearer ";
  const bool scheme_ok = header.substr(0, kScheme.size()) == kScheme;
  const std::string_view given = scheme_ok ? header.substr(kScheme.size()) : header;
  // Every byte of the given key is compared against the key (cycled), so the loop runs as long as
  // what the client sent whatever the key is; the lengths are compared at the end.
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i] ^ key[i % key.size()]);
  return scheme_ok && diff == 0;
}

}  // namespace kvshrink::launch
