#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace kvshrink::engine {

std::string StreamingDecoder::push(TokenId id) {
  pending_ += tokenizer_.token_bytes(id);
  const size_t complete = utf8::complete_prefix_length(pending_);
  std::string text = utf8::replace_invalid(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return text;
}

std::string StreamingDecoder::finish() {
  std::string text = utf8::replace_invalid(pending_);
  pending_.clear();
  return text;
}

}  // namespace kvshrink::engine
