// The step protocol (DESIGN.md §8): rank 0 sends every step to all ranks as one message on the
// control plane; every rank executes exactly that, so pools and stores stay in lockstep. Workers
// never read per-request settings from their own command line: a new sequence's compression
// settings travel in the step that adds it.
//
// Order of execution on every rank: release, add, fork, run the rows (one batched forward), compress;
// then every rank reports its free blocks and each live sequence's blocks (StepReport).
// Encoding: MessagePack of a JSON object (nlohmann::json), one broadcast of its bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/compression/compression_spec.h"
#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

struct StepMessage {
  struct Added {
    int64_t id;
    CompressionSpec compression;
    std::vector<CompressionSpec> forks;  // the settings its forks will be compressed under
  };
  struct Fork {
    int64_t id;             // the new sequence
    int64_t parent;         // a live sequence whose prompt is prefilled
    int64_t index;          // into the parent's Added::forks
    int64_t budget_tokens;  // 0: full KV (a plain copy)
  };
  struct Rows {
    int64_t id;
    std::vector<TokenId> tokens;  // a prefill chunk or one decode token
    bool logits;                  // the last row's logits are sampled (prefill ends or decode)
  };
  struct Compress {
    int64_t id;
    int64_t budget_tokens;  // per head on average (token-equivalents)
  };

  bool end_of_run = false;        // workers return from Engine::run
  std::vector<int64_t> released;  // finished, failed or preempted: their blocks go back now
  std::vector<Added> added;
  std::vector<Fork> forks;
  std::vector<Rows> rows;
  std::vector<Compress> compress;
  std::vector<int64_t> prompt_ended;  // their prompt's prefill ends in this step (where it compresses)

  bool empty() const {
    return released.empty() && added.empty() && forks.empty() && rows.empty() && compress.empty();
  }
};

// A stable text of every field of spec (settings that compare equal share one compressor).
std::string compression_key(const CompressionSpec& spec);

// Collective: rank 0's message arrives on every rank (the others' `message` is overwritten).
void broadcast_step(comm::Communicator& control, StepMessage& message);

}  // namespace kvshrink::engine
