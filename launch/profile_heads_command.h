// `kvshrink profile-heads`: measures HeadKV-R2's retrieval-reasoning score of every (layer, kv
// head) on synthetic needle-in-a-haystack probes (shared/research/kv-methods.md §6) and writes the
// head profile that the headkv allocator reads (engine/compression/head_profile_file.h). The probes
// and the scoring are engine/profiling/; this file holds the flags, the checks of the options, the
// probe text from eval/synthetic_tasks.h and the printing.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend_factory.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct ProfileHeadsOptions {
  std::string model;
  std::string out;  // "" = engine::default_head_profile_path(model)
  std::vector<int64_t> context_lengths = {1024, 2048};
  std::vector<double> depths = {10, 50, 90};
  int samples = 2;  // per (length, depth), alternating engine::kNeedleProbeTasks
  uint64_t seed = 0;
  int64_t context_size = 0;
  int64_t batch_size = 512;
  kernels::BackendOptions backend;  // --matmul-activations, --device
};

CLI::App* add_profile_heads_command(CLI::App& app, ProfileHeadsOptions& options);
int run_profile_heads(const ProfileHeadsOptions& options, comm::Communicator& comm, comm::Communicator& data);

}  // namespace kvshrink::launch
