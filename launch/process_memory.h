// Memory figures of this process, for the commands' reports.
#pragma once

#include <cstdint>

namespace kvshrink::launch {

// Peak resident set size of this process, in bytes (VmHWM).
uint64_t peak_rss_bytes();

}  // namespace kvshrink::launch
