// The progress of `kvshrink batch` on stderr: lines done of all the input's lines (those of an
// earlier run included), generated tokens per second and the time left at this run's pace.
// On a terminal a bar redrawn in place; otherwise (a log file, Slurm's output) one line per
// interval:
//
//   kvshrink: batch [#########...........] 120/300 lines, 412.5 tokens/s, ETA 2m10s
//   kvshrink: batch 120/300 lines (40%), 412.5 tokens/s, ETA 2m10s
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kvshrink::launch {

class BatchProgress {
 public:
  // interval_seconds: between lines when out is not a terminal (0: no lines until the end).
  BatchProgress(std::FILE* out, int64_t total_lines, int64_t done_before, double interval_seconds);

  // Any thread.
  void line_done() { done_.fetch_add(1, std::memory_order_relaxed); }
  void tokens(int64_t n) { tokens_.fetch_add(n, std::memory_order_relaxed); }

  // One thread: prints when the terminal's redraw or the next interval is due.
  void tick();
  // One thread: prints a line of its own (on a terminal, above the bar).
  void note(const std::string& line);
  // Prints the last state (on a terminal: ends the bar's line).
  void finish();

 private:
  void print(bool last);

  std::FILE* out_;
  const bool terminal_;
  const int64_t total_, done_before_;
  const double interval_;
  std::atomic<int64_t> done_{0};  // lines done in this run
  std::atomic<int64_t> tokens_{0};
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace kvshrink::launch
