// ChatML rendering of SmolLM2's chat template (tokenizer.chat_template), with its default system turn.
#pragma once

#include <string>
#include <vector>

namespace kvshrink::engine {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message; a default system turn first when the first
// message is not a system message; "<|im_start|>assistant\n" at the end if add_generation_prompt.
std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true);

}  // namespace kvshrink::engine
