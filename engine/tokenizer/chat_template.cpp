#include "engine/tokenizer/chat_template.h"

#include <string_view>

namespace kvshrink::engine {
namespace {

constexpr std::string_view kDefaultSystemText =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

void append_turn(std::string& out, std::string_view role, std::string_view content) {
  out += "<|im_start|>";
  out += role;
  out += '\n';
  out += content;
  out += "<|im_end|>\n";
}

}  // namespace

std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string prompt;
  // The template adds the default system turn inside its loop, so only when there is a message.
  if (!messages.empty() && messages.front().role != "system")
    append_turn(prompt, "system", kDefaultSystemText);
  for (const ChatMessage& message : messages) append_turn(prompt, message.role, message.content);
  if (add_generation_prompt) prompt += "<|im_start|>assistant\n";
  return prompt;
}

}  // namespace kvshrink::engine
