#include "engine/generation/stop_strings.h"

#include <algorithm>

namespace kvshrink::engine {

size_t find_new_stop(std::string_view text, size_t old_size, std::span<const std::string> stops) {
  size_t earliest = std::string_view::npos;
  for (const auto& stop : stops) {
    if (stop.empty()) continue;
    const size_t from = old_size >= stop.size() ? old_size - stop.size() + 1 : 0;
    earliest = std::min(earliest, text.find(stop, from));
  }
  return earliest;
}

}  // namespace kvshrink::engine
