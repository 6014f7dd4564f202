#include "launch/generate_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/generation/generator.h"
#include "engine/tokenizer/chat_template.h"
#include "launch/loaded_model.h"
#include "launch/model_options.h"

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

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& o) {
  auto* cmd = app.add_subcommand("generate",
                                 "Generate text from one prompt (run under mpirun for tensor parallelism)");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size);
  auto* prompt = cmd->add_option("-p,--prompt", o.prompt, "Prompt text");
  auto* prompt_file = cmd->add_option("-f,--prompt-file", o.prompt_file, "Read the prompt from this file");
  prompt->excludes(prompt_file);
  prompt_file->excludes(prompt);
  cmd->add_flag("--chat", o.chat, "Wrap the prompt as a user turn in the model's chat template (ChatML)");
  cmd->add_option("-n,--max-tokens", o.max_tokens, "Most tokens to generate")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
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

int run_generate(const GenerateOptions& options, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  const std::string prompt_text = read_prompt(options, comm);
  const auto spec = compression_specs(options.compression, comm).front();
  auto loaded = load_model(options.model, comm, options.batch_size);
  const auto& config = loaded.model->config();
  const int64_t context = context_size_or_default(options.context_size, config, comm);

  std::vector<engine::TokenId> prompt;
  if (coordinator) {
    prompt =
        loaded.tokenizer->encode(options.chat ? engine::render_chatml({{"user", prompt_text}}) : prompt_text);
  }
  engine::Generator generator(*loaded.model, *loaded.tokenizer, comm, context);
  engine::StreamingDecoder decoder(*loaded.tokenizer);
  std::unique_ptr<engine::KvCompressor> compressor;
  if (spec.enabled()) {
    compressor = engine::make_compressor(spec, *loaded.model, comm, loaded.path, loaded.identity);
  }
  auto pool = std::make_shared<kvstore::KvMemoryPool>();
  auto kv =
      loaded.model->make_kv_store(compressor ? compressor->store_options() : kvstore::KvStoreOptions{}, pool);
  const engine::KvCompression compression{compressor.get(), spec.budget_tokens, spec.budget_fraction,
                                          spec.compress_every};
  const auto result = generator.generate(
      kv, prompt, options.max_tokens, options.sampling,
      [&](engine::TokenId id) {
        std::fputs(decoder.push(id).c_str(), stdout);
        std::fflush(stdout);
      },
      compression);

  // KV and weight bytes summed over ranks (float sum is exact enough for a report).
  std::vector<float> totals = {static_cast<float>(result.kv_bytes_held),
                               static_cast<float>(loaded.model->weight_bytes()),
                               static_cast<float>(result.kv_bytes_full), static_cast<float>(pool->peak())};
  comm.all_reduce_sum(totals);
  if (coordinator) {
    std::fputs(decoder.finish().c_str(), stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (options.show_stats) {
      const auto n_generated = static_cast<int64_t>(result.tokens.size());
      const double full_kv = totals[2];
      fmt::print(stderr, "kvshrink: prompt {} tokens in {:.3f} s ({:.1f} tokens/s)\n", result.prompt_tokens,
                 result.prefill_seconds, result.prompt_tokens / result.prefill_seconds);
      fmt::print(stderr, "kvshrink: generated {} tokens in {:.3f} s ({:.1f} tokens/s), stop: {}\n",
                 n_generated, result.decode_seconds,
                 n_generated > 1 ? (n_generated - 1) / result.decode_seconds : 0.0,
                 engine::stop_reason_name(result.stop_reason));
      fmt::print(
          stderr,
          "kvshrink: {} rank(s), weights {:.1f} MiB in all, KV ({}) held {:.2f} MiB = {:.1f}% of full KV "
          "({:.2f} MiB), KV pool peak {:.2f} MiB, peak RSS rank 0 {:.1f} MiB\n",
          comm.world().size, totals[1] / 1048576.0, spec.label(), totals[0] / 1048576.0,
          full_kv > 0 ? 100.0 * totals[0] / full_kv : 0.0, full_kv / 1048576.0, totals[3] / 1048576.0,
          peak_rss_bytes() / 1048576.0);
    }
  }
  return 0;
}

}  // namespace kvshrink::launch
