// HeadKV-R2's retrieval-reasoning score of one decode step (shared/research/kv-methods.md §6), for
// every (layer, kv head) this rank owns.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kvstore/kv_store.h"

namespace kvshrink::engine {

// Adds to scores [n_layers x owned kv heads] the step's score of every owned kv head of kv (a store
// keeping its newest query, kvstore::KvStoreOptions::query_window >= 1): for each of the kv head's
// `group` query heads, the newest query's attention over the head's cached tokens (softmax, sums
// to 1; Backend::window_attention_mean), its top k = needle length tokens, and the attention of
// those inside the needle positions [needle[0], needle[1]) / k; averaged over the group.
void add_retrieval_step_scores(const kvstore::KvStore& kv, int64_t group, std::array<int64_t, 2> needle,
                               kernels::Backend& backend, std::vector<double>& scores);

}  // namespace kvshrink::engine
