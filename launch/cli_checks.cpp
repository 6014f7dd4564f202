#include "launch/cli_checks.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace kvshrink::launch {
namespace {

// The validator for a number x that must pass `ok`; `range` is how --help writes the range.
template <typename Ok>
CLI::Validator number_check(const std::string& range, Ok ok) {
  return CLI::Validator(
      [range, ok](std::string& text) {
        double x = 0.0;
        if (!CLI::detail::lexical_cast(text, x)) return fmt::format("{} is not a number", text);
        if (std::isfinite(x) && ok(x)) return std::string();
        return fmt::format("{} is outside {}", text, range);
      },
      range);
}

}  // namespace

CLI::Validator finite_in(double min, double max) {
  return number_check(fmt::format("[{:g}, {:g}]", min, max), [=](double x) { return x >= min && x <= max; });
}

CLI::Validator positive_up_to(double max) {
  return number_check(fmt::format("(0, {:g}]", max), [=](double x) { return x > 0.0 && x <= max; });
}

CLI::Validator non_negative_integer() {
  return CLI::Validator(
      [](std::string& text) {
        uint64_t x = 0;
        const bool negative = text.find('-') != std::string::npos;
        if (!negative && CLI::detail::lexical_cast(text, x)) return std::string();
        return fmt::format("{} is not an integer >= 0", text);
      },
      "INT >= 0");
}

}  // namespace kvshrink::launch
