#include "launch/profile_heads_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/compression/head_profile_file.h"
#include "engine/model/loaded_model.h"
#include "engine/tokenizer/chat_template.h"
#include "eval/synthetic_tasks.h"
#include "kernels/backend.h"
#include "kvstore/window_scores.h"
#include "launch/cli_checks.h"
#include "launch/model_options.h"
#include "launch/output_path.h"
#include "launch/process_memory.h"

namespace kvshrink::launch {
namespace {

using engine::TokenId;

// Probe tasks, alternating over a (length, depth)'s samples: one needle, and one needle among three
// distractor needles with other keys (the retrieval has to pick the asked key: "reasoning").
constexpr std::array<const char*, 2> kTasks = {"niah_single_2", "niah_multikey_1"};
constexpr const char* kMethod = "headkv-r2 (niah)";
// Added to every score so that no head has exactly zero importance.
constexpr float kScoreFloor = 1e-6f;

// One probe as tokens: the whole ChatML prompt (query-aware: context, question, answer prefix), the
// reference answer teacher-forced after it, and where the needle sentence lies in the prompt.
struct Probe {
  std::vector<TokenId> prompt;
  std::vector<TokenId> answer;
  // Token indexes [begin, end) of the needle sentence; = positions in a store that starts empty.
  std::array<int64_t, 2> needle = {0, 0};
  std::string label;  // "niah_single_2 len 1024 depth 50" (rank 0 only)
};

// byte_end[i] = end of token i in the text `ids` renders to (specials rendered; a BOS the tokenizer
// added and the text lacks ends at 0). Throws when the tokens do not render back to `text`.
std::vector<size_t> token_byte_ends(const std::vector<TokenId>& ids, const engine::Tokenizer& tokenizer,
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

// The prompt as eval's query-aware encode() makes it, then " <value>" as the answer. The needle is
// "One of the special magic numbers for <key> is: <value>." with value = sample.answers[0].
Probe make_probe(const eval::EvalSample& sample, const engine::Tokenizer& tokenizer) {
  const std::string prompt =
      engine::render_chatml({{"user", sample.context + sample.question}}) + sample.answer_prefix;
  const std::string& value = sample.answers.at(0);
  const std::string needle_tail = " is: " + value + ".";
  const size_t tail_at = prompt.find(needle_tail);
  const size_t needle_begin =
      tail_at == std::string::npos ? std::string::npos : prompt.rfind("One of the special magic", tail_at);
  if (needle_begin == std::string::npos) {
    throw std::runtime_error(
        fmt::format("profile-heads: no needle for '{}' in the {} prompt", value, sample.task));
  }
  const size_t needle_end = tail_at + needle_tail.size();

  const std::string text = prompt + " " + value;
  const auto ids = tokenizer.encode(text);
  const auto ends = token_byte_ends(ids, tokenizer, text);
  Probe probe;
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
  probe.label = fmt::format("{} len {} depth {:g}", sample.task, sample.context_length, sample.depth_percent);
  return probe;
}

// Rank 0 builds every probe; the others get only the count.
std::vector<Probe> build_probes(const ProfileHeadsOptions& o, const engine::Tokenizer& tokenizer) {
  const eval::TokenCounter count_tokens = [&](std::string_view text) {
    return static_cast<int64_t>(tokenizer.encode(text, /*parse_special=*/false).size());
  };
  std::vector<Probe> probes;
  for (int64_t length : o.context_lengths) {
    for (double depth : o.depths) {
      for (int i = 0; i < o.samples; ++i) {
        // A seed per probe: every probe has its own key, value and haystack.
        const uint64_t seed = o.seed * 1000003u + probes.size();
        const auto sample = eval::make_synthetic_sample(kTasks[static_cast<size_t>(i) % kTasks.size()],
                                                        length, depth, seed, count_tokens);
        probes.push_back(make_probe(sample, tokenizer));
      }
    }
  }
  return probes;
}

// One decode step's HeadKV-R2 scores, added to scores [n_layers x owned kv heads]: for each query
// head, the newest query's attention over its kv head's cached tokens (softmax, sums to 1), the top
// k = needle length tokens of it, and the attention of those inside the needle / k; averaged over
// the kv head's `group` query heads.
void add_step_scores(const kvstore::KvStore& kv, int64_t group, std::array<int64_t, 2> needle,
                     kernels::Backend& backend, std::vector<double>& scores) {
  const int64_t d = kv.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t k_needle = needle[1] - needle[0];
  std::vector<float> query;         // [own q heads x head_dim], the newest query of a layer
  std::vector<int32_t> q_position;  // [1]
  std::vector<float> attention;     // [tokens of the head]
  std::vector<int32_t> order;       // token indexes, most attended first (top k)
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    const auto& recent = kv.recent_queries(layer);
    recent.last(1, query, q_position);
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      const auto& head = kv.head(layer, h);
      const auto blocks = kvstore::key_blocks(head);
      const std::vector<int32_t> positions = head.positions();
      const int64_t n = head.tokens();
      const int64_t k = std::min(k_needle, n);
      attention.resize(static_cast<size_t>(n));
      order.resize(static_cast<size_t>(n));
      double head_score = 0.0;
      for (int64_t j = 0; j < group; ++j) {
        backend.window_attention_mean(query.data() + (h * group + j) * d, recent.row_floats(),
                                      q_position.data(),
                                      /*n_queries=*/1, /*group=*/1, d, scale, blocks, attention.data());
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
          return attention[a] > attention[b] || (attention[a] == attention[b] && a < b);
        });
        double in_needle = 0.0;
        for (int64_t r = 0; r < k; ++r) {
          const int32_t t = order[static_cast<size_t>(r)];
          if (positions[t] >= needle[0] && positions[t] < needle[1]) in_needle += attention[t];
        }
        head_score += in_needle / static_cast<double>(k_needle);
      }
      scores[static_cast<size_t>(layer * kv.owned_kv_heads() + h)] += head_score / static_cast<double>(group);
    }
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

CLI::App* add_profile_heads_command(CLI::App& app, ProfileHeadsOptions& o) {
  auto* cmd = app.add_subcommand(
      "profile-heads",
      "Score every (layer, kv head) for retrieval (HeadKV-R2) and write the headkv head profile");
  add_model_options(*cmd, o.model, o.context_size, o.batch_size);
  cmd->add_option("-o,--out", o.out, "Profile file (default: <model without .gguf>.heads.gguf)");
  cmd->add_option("--context-lengths", o.context_lengths, "Probe prompt lengths in tokens")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(int64_t{64}, int64_t{1} << 24));
  cmd->add_option("--depths", o.depths, "Needle depths in percent")
      ->delimiter(',')
      ->capture_default_str()
      ->check(finite_in(0.0, 100.0));
  cmd->add_option("--samples", o.samples,
                  "Probes per (length, depth), alternating niah_single_2 and niah_multikey_1")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o.seed, "Seed of the probe generator")
      ->capture_default_str()
      ->check(non_negative_integer());
  return cmd;
}

int run_profile_heads(const ProfileHeadsOptions& options, comm::Communicator& comm) {
  const bool coordinator = comm.world().is_coordinator();
  const auto start = std::chrono::steady_clock::now();
  const std::string out =
      options.out.empty() ? engine::default_head_profile_path(options.model).string() : options.out;
  check_output_file(out, comm);
  auto loaded = engine::load_model(options.model, comm, options.batch_size);
  auto& model = *loaded.model;
  const auto& config = model.config();
  const int64_t context = engine::context_size_or_default(options.context_size, config, comm);
  check_context_lengths(options.context_lengths, context, comm);

  std::vector<Probe> probes;
  std::string error;
  if (coordinator) {
    try {
      probes = build_probes(options, *loaded.tokenizer);
      if (probes.empty())
        throw std::runtime_error("profile-heads: no probes (give --context-lengths and --depths)");
      for (const auto& probe : probes) {
        const auto tokens = static_cast<int64_t>(probe.prompt.size() + probe.answer.size());
        if (tokens > context) {
          throw std::runtime_error(
              fmt::format("profile-heads: probe '{}' needs {} tokens but the context holds {}", probe.label,
                          tokens, context));
        }
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm::check_all(comm, error.empty(), error);
  const auto n_probes = comm.broadcast_value<uint64_t>(probes.size(), 0);
  probes.resize(n_probes);

  // Sum over probes and steps of each owned head's step score: [n_layers x owned kv heads].
  const int64_t owned = model.shard().kv_heads.size();
  std::vector<double> local(static_cast<size_t>(config.n_layers * owned), 0.0);
  for (uint64_t i = 0; i < n_probes; ++i) {
    const auto probe_start = std::chrono::steady_clock::now();
    auto& probe = probes[i];
    comm.broadcast_vector(probe.prompt, 0);
    comm.broadcast_vector(probe.answer, 0);
    comm.broadcast_values(std::span<int64_t>(probe.needle), 0);

    auto kv = model.make_kv_store(kvstore::KvStoreOptions{.query_window = 1});
    model.forward(probe.prompt, kv, engine::LogitsFor::kLastToken);
    // Step s scores the query that predicts answer[s]: the prompt's last token, then answer[s - 1].
    add_step_scores(kv, config.group_size(), probe.needle, model.backend(), local);
    for (size_t s = 0; s + 1 < probe.answer.size(); ++s) {
      model.forward(std::span<const TokenId>(&probe.answer[s], 1), kv, engine::LogitsFor::kLastToken);
      add_step_scores(kv, config.group_size(), probe.needle, model.backend(), local);
    }
    if (coordinator) {
      fmt::print(
          stderr,
          "kvshrink profile-heads: probe {}/{} {}: prompt {} tokens, needle tokens [{}, {}), answer {} "
          "tokens, {:.2f} s\n",
          i + 1, n_probes, probe.label, probe.prompt.size(), probe.needle[0], probe.needle[1],
          probe.answer.size(), seconds_since(probe_start));
    }
  }

  // Every rank fills its own kv heads of [n_layers x n_head_kv] (zeros elsewhere); the sum is the
  // whole model's profile. Score = mean over probes of the summed step scores.
  std::vector<float> all(static_cast<size_t>(config.n_layers * config.n_head_kv), 0.0f);
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    for (int64_t h = 0; h < owned; ++h) {
      all[static_cast<size_t>(layer * config.n_head_kv + model.shard().kv_heads.begin + h)] =
          static_cast<float>(local[static_cast<size_t>(layer * owned + h)] / static_cast<double>(n_probes));
    }
  }
  comm.all_reduce_sum(all);

  error.clear();
  if (coordinator) {
    engine::HeadProfile profile;
    profile.model = loaded.identity;
    profile.method = kMethod;
    profile.probes = static_cast<int64_t>(n_probes);
    profile.n_layers = config.n_layers;
    profile.n_kv_heads = config.n_head_kv;
    for (float score : all) profile.importance.push_back(std::max(score, kScoreFloor));
    try {
      engine::write_head_profile(out, profile);
    } catch (const std::exception& e) {
      error = fmt::format("cannot write the head profile '{}': {}", out, e.what());
    }
    // The strongest heads, as "layer.head score".
    std::vector<size_t> order(all.size());
    std::iota(order.begin(), order.end(), 0);
    const size_t top = std::min<size_t>(8, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(top), order.end(),
                      [&](size_t a, size_t b) { return all[a] > all[b]; });
    std::string best;
    for (size_t r = 0; r < top; ++r) {
      best += fmt::format(" {}.{} {:.4f}", order[r] / config.n_head_kv, order[r] % config.n_head_kv,
                          all[order[r]]);
    }
    const double sum = std::accumulate(all.begin(), all.end(), 0.0);
    fmt::print(stderr,
               "kvshrink profile-heads: {} probes, {} ranks, {:.1f} s; mean head score {:.4f}, top "
               "(layer.head):{}\n",
               n_probes, comm.world().size, seconds_since(start), sum / static_cast<double>(all.size()),
               best);
  }
  comm::check_all(comm, error.empty(), error);
  if (coordinator) fmt::print("{}\n", out);
  return 0;
}

}  // namespace kvshrink::launch
