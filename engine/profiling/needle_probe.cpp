#include "engine/profiling/needle_probe.h"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/tokenizer/chat_template.h"

namespace kvshrink::engine {
namespace {

// byte_end[i] = end of token i in the text `ids` renders to (specials rendered; a BOS the tokenizer
// added and the text lacks ends at 0). Throws when the tokens do not render back to `text`.
std::vector<size_t> token_byte_ends(const std::vector<TokenId>& ids, const Tokenizer& tokenizer,
                                    const std::string& text) {
  std::string rendered;
  std::vector<size_t> ends;
  for (TokenId id : ids) {
    rendered += tokenizer.token_bytes(id, /*render_special=*/true);
    ends.push_back(rendered.size());
  }
  if (rendered.size() < text.size() ||
      rendered.compare(rendered.size() - text.size(), text.size(), text) != 0) {
    throw std::runtime_error("profile-heads: the probe's tokens do not render back to its text");
  }
  const size_t lead = rendered.size() - text.size();
  for (auto& end : ends) end = end > lead ? end - lead : 0;
  return ends;
}

}  // namespace

std::string NeedleRequest::label() const {
  return fmt::format("{} len {} depth {:g}", task, context_length, depth_percent);
}

std::vector<NeedleRequest> needle_requests(const NeedleProbeSet& set) {
  std::vector<NeedleRequest> requests;
  for (const int64_t length : set.context_lengths) {
    for (const double depth : set.depths) {
      for (int i = 0; i < set.samples; ++i) {
        requests.push_back({.task = kNeedleProbeTasks[static_cast<size_t>(i) % kNeedleProbeTasks.size()],
                            .context_length = length,
                            .depth_percent = depth,
                            .seed = set.seed * 1000003u + requests.size()});
      }
    }
  }
  return requests;
}

NeedleProbe make_needle_probe(const NeedleRequest& request, const NeedleText& text,
                              const Tokenizer& tokenizer) {
  const std::string prompt = render_chatml({{"user", text.user}}) + text.answer_prefix;
  const std::string needle_tail = " is: " + text.value + ".";
  const size_t tail_at = prompt.find(needle_tail);
  const size_t needle_begin =
      tail_at == std::string::npos ? std::string::npos : prompt.rfind("One of the special magic", tail_at);
  if (needle_begin == std::string::npos) {
    throw std::runtime_error(
        fmt::format("profile-heads: no needle for '{}' in the {} prompt", text.value, request.task));
  }
  const size_t needle_end = tail_at + needle_tail.size();

  const std::string whole = prompt + " " + text.value;
  const auto ids = tokenizer.encode(whole);
  const auto ends = token_byte_ends(ids, tokenizer, whole);
  NeedleProbe probe;
  // Token i covers bytes [ends[i-1], ends[i]): the prompt is every token ending by prompt.size().
  size_t n_prompt = 0;
  while (n_prompt < ids.size() && ends[n_prompt] <= prompt.size()) ++n_prompt;
  if (n_prompt == 0 || ends[n_prompt - 1] != prompt.size() || n_prompt == ids.size()) {
    throw std::runtime_error("profile-heads: the answer's first token merges with the prompt");
  }
  probe.prompt.assign(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(n_prompt));
  probe.answer.assign(ids.begin() + static_cast<ptrdiff_t>(n_prompt), ids.end());
  // The needle: every token overlapping its bytes [needle_begin, needle_end).
  for (size_t i = 0, start = 0; i < n_prompt; start = ends[i], ++i) {
    if (ends[i] <= needle_begin || start >= needle_end) continue;
    if (probe.needle[1] == 0) probe.needle[0] = static_cast<int64_t>(i);
    probe.needle[1] = static_cast<int64_t>(i) + 1;
  }
  probe.label = request.label();
  return probe;
}

std::vector<NeedleProbe> build_needle_probes(const NeedleProbeSet& set, const NeedleTextMaker& make_text,
                                             const Tokenizer& tokenizer) {
  std::vector<NeedleProbe> probes;
  for (const auto& request : needle_requests(set)) {
    probes.push_back(make_needle_probe(request, make_text(request), tokenizer));
  }
  return probes;
}

}  // namespace kvshrink::engine
