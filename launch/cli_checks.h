// CLI11 validators the subcommands share. CLI::Range alone lets "nan" through (every comparison
// with NaN is false), so a floating-point flag checks finiteness as well as its range.
#pragma once

#include <CLI/CLI.hpp>

namespace kvshrink::launch {

// A finite number in [min, max].
CLI::Validator finite_in(double min, double max);
// A finite number in (0, max].
CLI::Validator positive_up_to(double max);
// An integer >= 0 (CLI11 reads "-1" into an unsigned flag as 2^64 - 1).
CLI::Validator non_negative_integer();

}  // namespace kvshrink::launch
