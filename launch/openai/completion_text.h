// The text a client sees of a generation, token by token: UTF-8 completed across tokens, a
// matched stop string and what follows it cut off (as OpenAI and vLLM do), and, while streaming,
// the last characters held back while they may still begin a stop string.
#pragma once

#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::launch {

class CompletionText {
 public:
  CompletionText(const engine::Tokenizer& tokenizer, std::vector<std::string> stop);
  // The text that may be sent now (possibly empty).
  std::string push(engine::TokenId token);
  // The rest, once the generation has ended.
  std::string finish();
  const std::string& sent() const { return sent_; }  // everything returned so far

 private:
  std::string take(size_t end);
  engine::StreamingDecoder decoder_;
  std::vector<std::string> stop_;
  size_t hold_back_ = 0;  // longest stop string minus one
  std::string text_;      // decoded so far (cut at a stop string once one matched)
  std::string sent_;
  bool stopped_ = false;
};

}  // namespace kvshrink::launch
