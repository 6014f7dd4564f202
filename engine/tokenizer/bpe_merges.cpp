#include "engine/tokenizer/bpe_merges.h"

#include <fmt/format.h>

#include <algorithm>
#include <queue>
#include <stdexcept>

namespace kvshrink::engine {
namespace {

// A symbol is a span of the word; merged-away symbols keep length 0. prev/next link the live ones.
struct Symbol {
  size_t begin;
  size_t length;
  int prev;  // -1 at the start
  int next;  // -1 at the end
};

// A rankable adjacent pair as it was when queued. It is stale once either symbol's length has
// changed: a symbol's begin never moves, so equal lengths mean the pair is still the same text.
struct PairCandidate {
  int32_t rank;
  int left;
  int right;
  size_t left_length;
  size_t right_length;
};

struct LowerRankFirst {
  bool operator()(const PairCandidate& a, const PairCandidate& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

size_t utf8_sequence_length(char lead) {
  const auto byte = static_cast<uint8_t>(lead);
  if (byte < 0xC0) return 1;
  if (byte < 0xE0) return 2;
  if (byte < 0xF0) return 3;
  return 4;
}

}  // namespace

BpeMerges::BpeMerges(const std::vector<std::string>& merges) {
  rank_of_pair_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    if (merge.size() < 2 || merge.find(' ', 1) == std::string::npos) {
      throw std::invalid_argument(fmt::format("BPE merge {} ('{}') has no 'LEFT RIGHT' form", rank, merge));
    }
    rank_of_pair_.try_emplace(merge, static_cast<int32_t>(rank));  // the first occurrence wins
  }
}

std::vector<std::string_view> BpeMerges::apply(std::string_view word) const {
  std::vector<Symbol> symbols;
  for (size_t offset = 0; offset < word.size();) {
    const size_t length = std::min(word.size() - offset, utf8_sequence_length(word[offset]));
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({offset, length, index - 1, offset + length == word.size() ? -1 : index + 1});
    offset += length;
  }

  std::priority_queue<PairCandidate, std::vector<PairCandidate>, LowerRankFirst> queue;
  std::string key;  // reused "LEFT RIGHT" lookup buffer
  auto queue_pair = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    key.assign(word.substr(a.begin, a.length));
    key.push_back(' ');
    key.append(word.substr(b.begin, b.length));
    const auto found = rank_of_pair_.find(key);
    if (found != rank_of_pair_.end()) queue.push({found->second, left, right, a.length, b.length});
  };

  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) queue_pair(i - 1, i);

  while (!queue.empty()) {
    const PairCandidate pair = queue.top();
    queue.pop();
    Symbol& left = symbols[pair.left];
    Symbol& right = symbols[pair.right];
    if (left.length != pair.left_length || right.length != pair.right_length) continue;

    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = pair.left;
    queue_pair(left.prev, pair.left);
    queue_pair(pair.left, left.next);
  }

  std::vector<std::string_view> result;
  for (const Symbol& symbol : symbols) {
    if (symbol.length > 0) result.push_back(word.substr(symbol.begin, symbol.length));
  }
  return result;
}

}  // namespace kvshrink::engine
