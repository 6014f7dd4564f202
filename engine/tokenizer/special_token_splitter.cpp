#include "engine/tokenizer/special_token_splitter.h"

#include <algorithm>

namespace kvshrink::engine {

SpecialTokenSplitter::SpecialTokenSplitter(const std::vector<std::string>& tokens,
                                           const std::vector<TokenKind>& kinds) {
  for (size_t id = 0; id < tokens.size(); ++id) {
    const TokenKind kind = kinds[id];
    const bool special =
        kind == TokenKind::kControl || kind == TokenKind::kUserDefined || kind == TokenKind::kUnknown;
    if (special && !tokens[id].empty()) {
      longest_first_.push_back({static_cast<TokenId>(id), tokens[id], kind == TokenKind::kUserDefined});
    }
  }
  std::stable_sort(
      longest_first_.begin(), longest_first_.end(),
      [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
}

std::vector<TextFragment> SpecialTokenSplitter::split(std::string_view text, bool parse_special) const {
  std::vector<TextFragment> fragments;
  if (!text.empty()) fragments.push_back({text, -1});

  for (const SpecialToken& token : longest_first_) {
    if (!parse_special && !token.user_defined) continue;
    std::vector<TextFragment> next;
    next.reserve(fragments.size());
    for (const TextFragment& fragment : fragments) {
      if (fragment.special_id >= 0) {
        next.push_back(fragment);
        continue;
      }
      std::string_view rest = fragment.text;
      for (size_t match = rest.find(token.text); match != std::string_view::npos;
           match = rest.find(token.text)) {
        if (match > 0) next.push_back({rest.substr(0, match), -1});
        next.push_back({{}, token.id});
        rest.remove_prefix(match + token.text.size());
      }
      if (!rest.empty()) next.push_back({rest, -1});
    }
    fragments = std::move(next);
  }
  return fragments;
}

}  // namespace kvshrink::engine
