#include "launch/engine_options.h"

#include "launch/model_options.h"

namespace kvshrink::launch {

void add_engine_options(CLI::App& cmd, engine::EngineOptions& o) {
  add_model_options(cmd, o.model, o.context_size, o.max_num_batched_tokens, o.backend);
  auto* batch = cmd.get_option("--batch-size");
  batch->description("Rows per step: decode tokens plus prefill chunks of all running sequences");
  cmd.add_option("--max-num-batched-tokens", o.max_num_batched_tokens,
                 "The same as --batch-size (vLLM's name)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->excludes(batch);
  cmd.add_option("--max-num-seqs", o.max_num_seqs, "Most sequences running at once")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd.add_option("--kv-memory", o.kv_memory,
                 "KV pool per rank, e.g. 512MiB or 2GiB (default: half the available memory, shared by "
                 "this node's ranks)")
      ->transform(CLI::AsSizeValue(true))
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 50));
}

}  // namespace kvshrink::launch
