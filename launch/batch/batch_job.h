// Rank 0's side of `kvshrink batch` while the engine serves: a feeder thread turns the input's
// lines that have no record yet into engine requests (each body parsed with the tokenizer as it is
// reached, a window of them waiting ahead of the scheduler) and the engine thread writes each
// line's record the moment it ends. A stop (a signal, a failed write) submits nothing more and
// cancels what waits or runs: those lines get no record, so the next run does them.
//
//   BatchJob job(lines, results, progress, inbox, window, signal);
//   job.write_refused_lines();  // before the model loads
//   std::thread feeder([&] { job.feed(tokenizer, settings); });  // closes the inbox when done
//   engine.serve(&inbox);
//   job.engine_done(); feeder.join();
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/serving/request_inbox.h"
#include "engine/tokenizer/tokenizer.h"
#include "launch/batch/batch_progress.h"
#include "launch/batch/batch_records.h"
#include "launch/batch/batch_results_file.h"
#include "launch/openai/completion_request.h"

namespace kvshrink::launch {

class BatchJob {
 public:
  // signal: set (to the signal's number) by a handler when the job must stop. window: requests
  // kept waiting ahead of the scheduler (its --max-num-seqs: enough to fill every free place).
  BatchJob(const std::vector<BatchLine>& lines, BatchResultsFile& results, BatchProgress& progress,
           engine::RequestInbox& inbox, int64_t window, const std::atomic<int>& signal);

  // Writes the records of the lines refused for their envelope (no tokenizer needed); returns how
  // many lines are left to run. Call before feed(), on any thread.
  int64_t write_refused_lines();
  // The feeder thread: submits every line without a record (its body parsed against settings),
  // then closes the inbox, then shows the progress until engine_done().
  void feed(const engine::Tokenizer& tokenizer, const ApiSettings& settings);
  // Any thread: the engine has returned (or failed); feed() returns soon after.
  void engine_done() { engine_done_ = true; }

  bool stopped() const { return signal_ != 0 || failed_; }
  // Why the job failed ("" = it did not): a record that could not be written, an internal error.
  std::string failure() const;
  int64_t completed() const { return completed_; }  // lines that ran and were written, this run
  int64_t refused() const { return refused_; }      // error records written, this run

 private:
  bool submitting() const { return !stopped() && !engine_done_; }
  void submit_all();
  void submit(const BatchLine& line);
  bool write(const BatchLine& line, const nlohmann::json& record);
  void fail(const std::string& why);
  void watch();

  const std::vector<BatchLine>& lines_;
  BatchResultsFile& results_;
  BatchProgress& progress_;
  engine::RequestInbox& inbox_;
  const int64_t window_;
  const std::atomic<int>& signal_;
  const engine::Tokenizer* tokenizer_ = nullptr;  // given to feed()
  const ApiSettings* settings_ = nullptr;
  bool announced_stop_ = false;  // the feeder said why it stops
  std::atomic<bool> engine_done_{false};
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mutex_;
  std::string failure_;
  std::atomic<int64_t> completed_{0}, refused_{0};
};

}  // namespace kvshrink::launch
