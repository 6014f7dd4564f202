#include "launch/batch/batch_progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace kvshrink::launch {
namespace {

constexpr double kRedrawSeconds = 0.25;  // a terminal's bar
constexpr int kBarWidth = 24;

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

}  // namespace

BatchProgress::BatchProgress(std::FILE* out, int64_t total_lines, int64_t done_before,
                             double interval_seconds)
    : out_(out),
      terminal_(isatty(fileno(out)) == 1),
      total_(total_lines),
      done_before_(done_before),
      interval_(interval_seconds),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

void BatchProgress::tick() {
  const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_print_).count();
  if (terminal_ ? since >= kRedrawSeconds : interval_ > 0.0 && since >= interval_) print(false);
}

void BatchProgress::note(const std::string& line) {
  fmt::print(out_, "{}{}\n", terminal_ ? "\r\033[K" : "", line);
  std::fflush(out_);
}

void BatchProgress::finish() {
  print(true);
}

void BatchProgress::print(bool last) {
  const auto now = std::chrono::steady_clock::now();
  last_print_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t ran = done_.load(std::memory_order_relaxed);
  const int64_t done = std::min(total_, done_before_ + ran);
  const double tokens_per_second = elapsed > 0.0 ? tokens_.load(std::memory_order_relaxed) / elapsed : 0.0;
  const std::string eta = ran > 0 && done < total_ ? duration(elapsed / ran * (total_ - done))
                          : done == total_         ? "0s"
                                                   : "?";
  const std::string lines = fmt::format("{}/{} lines", done, total_);
  const std::string rate = fmt::format("{:.1f} tokens/s, {} {}", tokens_per_second, last ? "elapsed" : "ETA",
                                       last ? duration(elapsed) : eta);
  if (terminal_) {
    const auto filled = total_ > 0 ? static_cast<int>(kBarWidth * done / total_) : kBarWidth;
    const std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '.');
    fmt::print(out_, "\r\033[Kkvshrink: batch [{}] {}, {}{}", bar, lines, rate, last ? "\n" : "");
  } else {
    const int64_t percent = total_ > 0 ? 100 * done / total_ : 100;
    fmt::print(out_, "kvshrink: batch {} ({}%), {}\n", lines, percent, rate);
  }
  std::fflush(out_);
}

}  // namespace kvshrink::launch
