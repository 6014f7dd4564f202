// The API key check: `Authorization: Bearer KEY`, compared in constant time (the time does not
// depend on where a wrong key first differs, nor on its length beyond the header's).
#pragma once

#include <string_view>

namespace kvshrink::launch {

// True when no key is set, or the header is "Bearer " + key.
bool api_key_matches(std::string_view key, std::string_view authorization_header);

}  // namespace kvshrink::launch
