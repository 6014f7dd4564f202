#include "launch/openai/completion_text.h"

#include <algorithm>

#include "engine/generation/stop_strings.h"

namespace kvshrink::launch {

CompletionText::CompletionText(const engine::Tokenizer& tokenizer, std::vector<std::string> stop)
    : decoder_(tokenizer), stop_(std::move(stop)) {
  for (const auto& s : stop_) hold_back_ = std::max(hold_back_, s.empty() ? 0 : s.size() - 1);
}

// text_[sent_.size(), end), appended to sent_. A held-back cut never splits a UTF-8 character.
std::string CompletionText::take(size_t end) {
  while (end > sent_.size() && end < text_.size() && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80)
    --end;
  if (end <= sent_.size()) return "";
  std::string out = text_.substr(sent_.size(), end - sent_.size());
  sent_ += out;
  return out;
}

std::string CompletionText::push(engine::TokenId token) {
  if (stopped_) return "";
  const size_t old_size = text_.size();
  text_ += decoder_.push(token);
  const size_t cut = engine::find_new_stop(text_, old_size, stop_);
  if (cut != std::string::npos) {
    stopped_ = true;
    text_.resize(cut);
    return take(cut);
  }
  return take(text_.size() > hold_back_ ? text_.size() - hold_back_ : 0);
}

std::string CompletionText::finish() {
  if (!stopped_) text_ += decoder_.finish();
  stopped_ = true;
  return take(text_.size());
}

}  // namespace kvshrink::launch
