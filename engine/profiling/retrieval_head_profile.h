// `kvshrink profile-heads`' measurement (HeadKV-R2, shared/research/kv-methods.md §6): every
// needle probe is prefilled and its answer teacher-forced; each (layer, kv head)'s score is the
// mean over probes of its summed step scores (retrieval_step_scores.h), and the head profile the
// headkv allocator reads is made from it (engine/compression/head_profile_file.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/compression/head_profile_file.h"
#include "engine/model/llama_model.h"
#include "engine/profiling/needle_probe.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

struct RetrievalHeadScores {
  uint64_t probes = 0;
  std::vector<float> scores;  // [n_layers x n_kv_heads]: mean over probes of the summed step scores
};

// Called on every rank after probe `index` of `count` (its label is rank 0's only).
using ProbeDone = std::function<void(uint64_t index, uint64_t count, const NeedleProbe& probe)>;

// Collective: rank 0's probes (the other ranks pass none) are broadcast one at a time and scored
// on every rank's kv heads; step s scores the query that predicts answer[s] (the prompt's last
// token, then answer[s - 1]). Every rank's kv heads are summed into the whole model's scores.
RetrievalHeadScores score_retrieval_heads(LlamaModel& model, comm::Communicator& comm,
                                          std::vector<NeedleProbe> probes, const ProbeDone& done);

// The profile: every score floored at 1e-6 (no head of exactly zero importance), method
// "headkv-r2 (niah)".
HeadProfile retrieval_head_profile(const RetrievalHeadScores& scores, const std::string& identity,
                                   const LlamaConfig& config);

// The indexes (layer * n_kv_heads + head) of the `count` highest scores (fewer if fewer), highest
// first.
std::vector<size_t> strongest_heads(std::span<const float> scores, size_t count);

}  // namespace kvshrink::engine
