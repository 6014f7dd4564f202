// An allocator turns every head's token scores (from a press) into how many tokens each
// (layer, kv head) keeps under one global budget. It sees all heads of all ranks: the coordinator
// gathers the scores and calls it once, so the plan is the same for any tensor-parallel size.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kvshrink::kvstore {

// Scores of one sequence, all heads: scores[layer * n_heads + head][token], +infinity = always keep.
struct AllocationInput {
  int64_t n_layers = 0;
  int64_t n_heads = 0;  // kv heads per layer (all ranks)
  std::span<const std::vector<float>> scores;
  int64_t budget_tokens = 0;  // mean tokens kept per head, always-kept ones included
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual std::string_view name() const = 0;
  // Tokens kept per head [n_layers * n_heads], always-kept ones included. The sum never exceeds
  // n_layers * n_heads * budget_tokens.
  virtual std::vector<int64_t> head_budgets(const AllocationInput& input) const = 0;
};

// Per head: the indices of its `budgets[h]` highest scores (ties go to the later token), ascending.
std::vector<std::vector<int32_t>> select_top(std::span<const std::vector<float>> scores,
                                             std::span<const int64_t> budgets);

// ChunkKV-style chunk scores (in place): the head's tokens are cut into chunks of chunk_size
// consecutive indices (0..N-1, N..2N-1, ...; the last may be shorter), and every candidate of a chunk
// gets the mean score of the chunk's candidates; always-kept tokens (+infinity) keep their score and
// do not enter the mean. Every allocator then ranks chunks, not lone tokens, and select_top keeps
// chunks whole: its ties go to the later token, so of chunks with equal scores the later one is
// taken first, and only the last chunk it reaches may be cut (keeping that chunk's latest tokens).
// chunk_size 1 leaves the scores unchanged.
void chunk_scores(std::vector<float>& scores, int64_t chunk_size);

// Splits `total` into integers proportional to `weights`, none above its cap (water-filling, then
// largest remainders): the parts sum to min(total, sum of caps) exactly. Zero weights share equally.
std::vector<int64_t> apportion(int64_t total, std::span<const double> weights, std::span<const int64_t> caps);

// What one head has: tokens it must keep (+infinity scores) and candidates competing for the rest.
struct HeadCounts {
  int64_t always_kept = 0;
  int64_t candidates = 0;
};
HeadCounts count_head(const std::vector<float>& scores);
// Candidates the head may keep at the uniform budget: max(0, budget - always_kept), at most all.
int64_t uniform_free_budget(const HeadCounts& counts, int64_t budget_tokens);
// The head's share of the global pool that non-uniform allocators redistribute: max(0, budget -
// always_kept), not capped by its own candidates (a head that holds fewer tokens than the budget,
// e.g. after an earlier compaction, leaves its share to the others instead of losing it).
int64_t free_budget_share(const HeadCounts& counts, int64_t budget_tokens);
// A head's final budget: its always-kept tokens plus `free_tokens` candidates. When the budget is
// below the always-kept count the head keeps `budget_tokens` of them (the most recent).
int64_t head_budget(const HeadCounts& counts, int64_t free_tokens, int64_t budget_tokens);

}  // namespace kvshrink::kvstore
