// Stop strings over text that grows token by token: shared by the scheduler (which ends the
// sequence) and the front ends (which cut the text a client sees there).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace kvshrink::engine {

// Where in `text` the earliest match of a (non-empty) stop string begins among the matches that
// end past `old_size` (the text's length before the last token added to it); npos when none.
size_t find_new_stop(std::string_view text, size_t old_size, std::span<const std::string> stops);

}  // namespace kvshrink::engine
