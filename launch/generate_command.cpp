#include "launch/generate_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/tokenizer/chat_template.h"
#include "launch/engine_options.h"
#include "launch/model_options.h"
#include "launch/process_memory.h"

namespace kvshrink::launch {
namespace {

// Rank 0 reads the prompt; a missing file is reported on every rank.
std::string read_prompt(const GenerateOptions& options, comm::Communicator& comm) {
  std::string text = options.prompt;
  bool ok = true;
  if (comm.world().is_coordinator() && !options.prompt_file.empty()) {
    std::ifstream in(options.prompt_file, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    ok = static_cast<bool>(in);
    text = content.str();
  }
  comm::check_all(comm, ok, fmt::format("cannot read the prompt file '{}'", options.prompt_file));
  return text;
}

void print_stats(const engine::RequestResult& result, const engine::RunStats& run,
                 const engine::CompressionSpec& spec, double weight_bytes, int ranks) {
  const auto n_generated = static_cast<int64_t>(result.tokens.size());
  const double prefill = result.first_token_seconds - result.arrival_seconds;
  const double decode = result.finish_seconds - result.first_token_seconds;
  const auto full_kv = static_cast<double>(result.kv_bytes_full);
  fmt::print(stderr, "kvshrink: prompt {} tokens in {:.3f} s ({:.1f} tokens/s)\n", result.prompt_tokens,
             prefill, result.prompt_tokens / prefill);
  fmt::print(stderr, "kvshrink: generated {} tokens in {:.3f} s ({:.1f} tokens/s), stop: {}\n", n_generated,
             decode, n_generated > 1 ? (n_generated - 1) / decode : 0.0,
             engine::finish_reason_name(result.finish));
  fmt::print(stderr,
             "kvshrink: {} rank(s), weights {:.1f} MiB in all, KV ({}) held {:.2f} MiB = {:.1f}% of full KV "
             "({:.2f} MiB), KV pool peak {:.2f} MiB of {:.0f} MiB per rank, peak RSS rank 0 {:.1f} MiB\n",
             ranks, weight_bytes / 1048576.0, spec.label(), result.kv_bytes_held / 1048576.0,
             full_kv > 0 ? 100.0 * result.kv_bytes_held / full_kv : 0.0, full_kv / 1048576.0,
             run.pool_peak_bytes / 1048576.0, run.pool_capacity_bytes / 1048576.0,
             peak_rss_bytes() / 1048576.0);
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& o) {
  auto* cmd = app.add_subcommand("generate",
                                 "Generate text from one prompt (run under mpirun for tensor parallelism)");
  add_engine_options(*cmd, o.engine);
  auto* prompt = cmd->add_option("-p,--prompt", o.prompt, "Prompt text");
  auto* prompt_file = cmd->add_option("-f,--prompt-file", o.prompt_file, "Read the prompt from this file");
  prompt->excludes(prompt_file);
  prompt_file->excludes(prompt);
  cmd->add_flag("--chat", o.chat, "Wrap the prompt as a user turn in the model's chat template (ChatML)");
  cmd->add_option("-n,--max-tokens", o.max_tokens, "Most tokens to generate")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--stop", o.stop,
                  "Stop when the generated text contains this string (repeat the flag for several); it is "
                  "printed with the text");
  add_sampling_options(*cmd, o.sampling);
  add_compression_options(*cmd, o.compression, /*several=*/false);
  cmd->add_flag("!--no-stats", o.show_stats, "Do not print timings and memory to stderr");
  cmd->callback([prompt, prompt_file] {
    if (prompt->count() == 0 && prompt_file->count() == 0) {
      throw CLI::RequiredError("one of --prompt or --prompt-file");
    }
  });
  return cmd;
}

int run_generate(const GenerateOptions& options, comm::Communicator& comm, comm::Communicator& data) {
  const bool coordinator = comm.world().is_coordinator();
  const std::string prompt_text = read_prompt(options, comm);
  const auto spec = compression_specs(options.compression, comm).front();
  engine::Engine engine(options.engine, comm, data);
  const auto& tokenizer = engine.tokenizer();

  engine::Request request;
  if (coordinator) {
    request.prompt =
        tokenizer.encode(options.chat ? engine::render_chatml({{"user", prompt_text}}) : prompt_text);
  }
  request.sampling = options.sampling;
  request.max_tokens = options.max_tokens;
  request.stop = options.stop;
  request.compression = spec;
  engine::StreamingDecoder decoder(tokenizer);
  request.on_token = [&](engine::TokenId id) {
    std::fputs(decoder.push(id).c_str(), stdout);
    std::fflush(stdout);
    return true;
  };
  std::vector<engine::Request> requests;
  requests.push_back(std::move(request));
  const auto results = engine.run(std::move(requests));
  comm::check_all(comm, !coordinator || results[0].error.empty(), coordinator ? results[0].error : "");

  std::vector<float> weights = {static_cast<float>(engine.model().weight_bytes())};
  comm.all_reduce_sum(weights);
  if (!coordinator) return 0;
  std::fputs(decoder.finish().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (options.show_stats) print_stats(results[0], engine.last_run(), spec, weights[0], comm.world().size);
  return 0;
}

}  // namespace kvshrink::launch
