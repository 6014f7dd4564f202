// Byte-level BPE merge table (tokenizer.ggml.merges: "A B", index = rank) and the merge loop of
// llama.cpp's llm_tokenizer_bpe_session: repeatedly merge the adjacent pair with the lowest rank,
// the leftmost one on ties, until no adjacent pair has a rank. A priority queue with lazy deletion
// keeps a word of n symbols at O(n log n).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvshrink::engine {

class BpeMerges {
 public:
  // Throws std::invalid_argument for a merge without a space after its first character.
  explicit BpeMerges(const std::vector<std::string>& merges);

  // `word` is byte-level text; returns its final symbols as views into `word`, in order.
  std::vector<std::string_view> apply(std::string_view word) const;

 private:
  std::unordered_map<std::string, int32_t> rank_of_pair_;  // key "LEFT RIGHT", as in the file
};

}  // namespace kvshrink::engine
