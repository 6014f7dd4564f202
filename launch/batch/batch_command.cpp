#include "launch/batch/batch_command.h"

#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "launch/api_settings.h"
#include "launch/batch/batch_job.h"
#include "launch/engine_options.h"

namespace kvshrink::launch {
namespace {

namespace fs = std::filesystem;

// Set by SIGTERM/SIGINT/SIGUSR1 on rank 0 (to the signal's number); the job stops after the step.
std::atomic<int> stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

void on_stop_signal(int number) {
  stop_signal.store(number);
}

// Rank 0 catches the signals; the others ignore them and follow rank 0's steps to the end (Slurm
// signals every task).
void handle_stop_signals(bool coordinator) {
  struct sigaction action = {};
  action.sa_handler = coordinator ? on_stop_signal : SIG_IGN;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);  // mpirun forwards SIGUSR1 to the ranks without killing them
}

// Rank 0, before the model loads: the input's lines and the results file opened for appending.
std::vector<BatchLine> open_files(const BatchOptions& o, std::optional<BatchResultsFile>& results) {
  std::error_code ec;
  if (fs::exists(o.output, ec) && fs::equivalent(o.input, o.output, ec))
    throw std::runtime_error(fmt::format("the output '{}' is the input file", o.output));
  auto lines = read_batch_input(o.input);
  results.emplace(o.output);
  return lines;
}

int64_t lines_done(const std::vector<BatchLine>& lines, const BatchResultsFile& results) {
  int64_t done = 0;
  for (const auto& line : lines) done += results.has(line) ? 1 : 0;
  return done;
}

// Collective: the engine serves rank 0's job until every line is submitted and ended (or the job
// stopped).
void serve_lines(const BatchOptions& o, BatchJob* job, engine::RequestInbox& inbox,
                 const engine::CompressionSpec& default_spec, comm::Communicator& control,
                 comm::Communicator& data) {
  engine::Engine engine(o.engine, control, data);
  if (job == nullptr) return engine.serve(nullptr);
  const ApiSettings settings =
      api_settings(engine, o.engine.model, o.served_model_name, o.compression, default_spec);
  fmt::print(
      stderr, "kvshrink: batch: running on '{}' ({} by default, {} rank(s), KV pool {:.0f} MiB per rank)\n",
      settings.model_name, default_spec.label(), control.world().size, engine.pool().capacity() / 1048576.0);
  std::thread feeder;
  struct JoinFeeder {  // also when serve() throws: the feeder stops submitting and returns
    BatchJob& job;
    std::thread& feeder;
    ~JoinFeeder() {
      job.engine_done();
      if (feeder.joinable()) feeder.join();
    }
  } join{*job, feeder};
  feeder = std::thread([&] { job->feed(engine.tokenizer(), settings); });
  engine.serve(&inbox);
}

// Rank 0: the run's outcome on stderr and its exit code.
int report(const BatchOptions& o, const std::vector<BatchLine>& lines, const BatchResultsFile& results,
           const BatchJob& job) {
  const auto total = static_cast<int64_t>(lines.size());
  const int64_t done = lines_done(lines, results);
  const std::string ran =
      fmt::format("this run: {} completed, {} error record(s)", job.completed(), job.refused());
  if (const std::string failure = job.failure(); !failure.empty()) {
    fmt::print(stderr, "kvshrink: error: {} ({} of {} done; {}; resume with the same command)\n", failure,
               done, total, ran);
    return 1;
  }
  if (done == total) {
    fmt::print(stderr, "kvshrink: batch complete: all {} lines have a record in '{}' ({})\n", total, o.output,
               ran);
    return 0;
  }
  if (stop_signal != 0) {
    fmt::print(stderr, "kvshrink: batch interrupted: {} of {} done; resume with the same command\n", done,
               total);
    return kBatchInterruptedExitCode;
  }
  fmt::print(stderr, "kvshrink: error: batch ended with {} of {} lines without a record ({})\n", total - done,
             total, ran);
  return 1;
}

}  // namespace

CLI::App* add_batch_command(CLI::App& app, BatchOptions& o) {
  auto* cmd = app.add_subcommand(
      "batch",
      "Run an OpenAI-format batch file (vLLM run_batch) on the engine; resumable (run under mpirun)");
  add_engine_options(*cmd, o.engine);
  add_compression_options(*cmd, o.compression, /*several=*/false);
  cmd->add_option("-i,--input", o.input,
                  "JSONL of requests: {\"custom_id\", \"method\": \"POST\", \"url\": \"/v1/completions\" or "
                  "\"/v1/chat/completions\", \"body\"}")
      ->required();
  cmd->add_option("-o,--output", o.output,
                  "JSONL of results, one per input line, appended as they complete; run again with the same "
                  "file to resume")
      ->required();
  cmd->add_option("--served-model-name", o.served_model_name,
                  "The model name bodies may give (default: the GGUF's stem)");
  cmd->add_option("--progress-interval", o.progress_interval,
                  "Seconds between progress lines when stderr is not a terminal (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  return cmd;
}

int run_batch(const BatchOptions& o, comm::Communicator& control, comm::Communicator& data) {
  const bool coordinator = control.world().is_coordinator();
  handle_stop_signals(coordinator);
  const auto default_spec = compression_specs(o.compression, control).front();
  std::vector<BatchLine> lines;
  std::optional<BatchResultsFile> results;
  std::string error;
  if (coordinator) {
    try {
      lines = open_files(o, results);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(control, error.empty(), error);

  engine::RequestInbox inbox;  // rank 0's; no limit: the job keeps a window of lines waiting
  std::optional<BatchProgress> progress;
  std::optional<BatchJob> job;
  int64_t to_run = 0;
  if (coordinator) {
    const auto total = static_cast<int64_t>(lines.size());
    const int64_t done = lines_done(lines, *results);
    progress.emplace(stderr, total, done, o.progress_interval);
    job.emplace(lines, *results, *progress, inbox, o.engine.max_num_seqs, stop_signal);
    fmt::print(stderr, "kvshrink: batch '{}' -> '{}': {} lines, {} already done{}\n", o.input, o.output,
               total, done,
               results->torn_bytes() > 0
                   ? fmt::format(" (a torn last line of {} bytes dropped)", results->torn_bytes())
                   : "");
    to_run = job->write_refused_lines();
  }
  // The model loads only when some line is left to run.
  const bool run_engine = control.broadcast_value<int32_t>(
      coordinator && to_run > 0 && job->failure().empty() && stop_signal == 0, 0);
  if (run_engine) serve_lines(o, coordinator ? &*job : nullptr, inbox, default_spec, control, data);
  int32_t code = 0;
  if (coordinator) {
    if (run_engine) progress->finish();
    code = report(o, lines, *results, *job);
  }
  return control.broadcast_value<int32_t>(code, 0);
}

}  // namespace kvshrink::launch
