#include "engine/serving/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "kvstore/press_registry.h"

namespace kvshrink::engine {

struct Scheduler::Entry {
  Entry(int64_t id, Request request, RequestResult& result, const Tokenizer& tokenizer)
      : id(id),
        request(std::move(request)),
        result(&result),
        sampler(this->request.sampling),
        decoder(tokenizer) {}

  int64_t id;
  Request request;
  RequestResult* result;
  Sampler sampler;
  StreamingDecoder decoder;
  std::string text;            // generated so far (for stop strings)
  std::vector<TokenId> input;  // to prefill: the prompt, plus the generated tokens after a preemption
  int64_t prefilled = 0;       // tokens of input run so far
  int64_t tail = 0;            // tokens in each head's tail segment (as reported)
  bool added = false;          // the ranks hold a store for it
  bool decoding = false;       // prefill done: each step runs `next`
  bool finished = false;
  TokenId next = 0;           // sampled, to run in the next step
  int64_t decode_steps = 0;   // decode rows run since the last prefill
  int64_t budget_tokens = 0;  // resolved when the first prefill ends
  int64_t positions() const { return prefilled + decode_steps; }
  bool compresses() const { return request.compression.enabled(); }
  bool compress_due() const {
    const int64_t every = request.compression.compress_every;
    return compresses() && decoding && every > 0 && (decode_steps + 1) % every == 0;
  }
};

Scheduler::Scheduler(const SchedulerLimits& limits, const KvGeometry& geometry, const Tokenizer& tokenizer)
    : limits_(limits), geometry_(geometry), tokenizer_(tokenizer) {}

Scheduler::~Scheduler() = default;

int64_t Scheduler::running() const {
  return static_cast<int64_t>(running_.size());
}

void Scheduler::submit(Request request, RequestResult& result, double now) {
  const int64_t id = next_id_++;
  auto entry = std::make_unique<Entry>(id, std::move(request), result, tokenizer_);
  entry->input = entry->request.prompt;
  result = RequestResult{};
  result.prompt_tokens = static_cast<int64_t>(entry->input.size());
  result.arrival_seconds = now;
  entries_.emplace(id, std::move(entry));
  waiting_.push_back(id);
}

void Scheduler::finish(Entry& entry, FinishReason reason, double now) {
  if (entry.finished) return;
  entry.finished = true;
  entry.result->finish = reason;
  entry.result->finish_seconds = now;
  std::erase(running_, entry.id);
  std::erase(waiting_, entry.id);
  to_release_.push_back(entry.id);
}

// Blocks rank r may need beyond what a sequence holds while it is compressed. Token eviction
// compacts in place: nothing when the store is one segment (the first compression, after
// prefill), else the tail's kept tokens appended to the compacted segment (at most the tail's
// blocks plus one per head). A dimension-level method builds a copy: as much as the sequence holds.
static int64_t headroom(const KvGeometry& g, int r, bool first, int64_t tail, int64_t held, bool copies) {
  if (copies) return held;
  return first ? 0 : g.blocks_for(r, 0, tail + g.block_tokens);
}

// avail[r] += the blocks sequence `id` held on rank r after the last step (released now).
static void give_back(std::vector<int64_t>& avail, const StepReport& report, int64_t id) {
  if (const auto it = report.sequence_blocks.find(id); it != report.sequence_blocks.end()) {
    for (size_t r = 0; r < avail.size(); ++r) avail[r] += it->second[r];
  }
}

void Scheduler::preempt(Entry& entry, std::vector<int64_t>& avail, const StepReport& report,
                        StepMessage& step) {
  give_back(avail, report, entry.id);
  step.released.push_back(entry.id);
  std::erase(running_, entry.id);
  waiting_.push_front(entry.id);
  // Recompute later: prefill the prompt and what was generated, then sample the next token.
  entry.input = entry.request.prompt;
  entry.input.insert(entry.input.end(), entry.result->tokens.begin(), entry.result->tokens.end());
  if (entry.decoding) entry.input.pop_back();  // `next` is fed as the last prefill row's successor
  entry.decoding = false;
  entry.prefilled = 0;
  entry.decode_steps = 0;
  entry.tail = 0;
  entry.added = false;
  entry.result->preemptions += 1;
}

bool Scheduler::admit(Entry& entry, std::vector<int64_t>& avail, StepMessage& step, double now) {
  const auto n = static_cast<int64_t>(entry.input.size());
  const bool copies = kvstore::is_dimension_method(entry.request.compression.method);
  std::vector<int64_t> need(static_cast<size_t>(geometry_.tp()));
  for (int r = 0; r < geometry_.tp(); ++r) {
    const int64_t prefill = geometry_.blocks_for(r, 0, n + 1);
    need[r] = prefill + (entry.compresses() ? headroom(geometry_, r, true, n, prefill, copies) : 0);
  }
  for (int r = 0; r < geometry_.tp(); ++r) {
    if (need[r] > geometry_.capacity_blocks) {
      entry.result->error = fmt::format(
          "the request needs {} KV blocks on rank {} at full size (prompt {} tokens{}), more than the "
          "pool's {} (raise --kv-memory or shorten the prompt)",
          need[r], r, n, entry.compresses() ? ", plus room to compress" : "", geometry_.capacity_blocks);
      finish(entry, FinishReason::kError, now);
      return true;
    }
  }
  for (int r = 0; r < geometry_.tp(); ++r) {
    if (need[r] > avail[r]) return false;
  }
  for (int r = 0; r < geometry_.tp(); ++r) avail[r] -= need[r];
  waiting_.pop_front();
  running_.push_back(entry.id);
  entry.added = true;
  step.added.push_back({entry.id, entry.request.compression});
  return true;
}

// Memory first (what the released sequences free, what the running ones need this step, preempting
// the newest while some rank cannot hold it), then admission in arrival order, then the rows.
StepMessage Scheduler::next_step(const StepReport& report, double now) {
  StepMessage step;
  for (const auto& [id, error] : report.failed) {
    if (auto it = entries_.find(id); it != entries_.end() && !it->second->finished) {
      it->second->result->error = error;
      finish(*it->second, FinishReason::kError, now);
    }
  }
  for (const int64_t id : compressed_last_step_) {
    if (auto it = entries_.find(id); it != entries_.end() && it->second->result->kv_bytes_compressed == 0) {
      it->second->result->kv_bytes_compressed = report.bytes_held.contains(id) ? report.bytes_held.at(id) : 0;
    }
  }
  for (auto& [id, entry] : entries_) {
    if (report.bytes_held.contains(id)) {
      entry->result->kv_bytes_held = report.bytes_held.at(id);
      entry->result->kv_bytes_full = report.bytes_full.at(id);
    }
  }
  std::vector<int64_t> avail = report.free_blocks;
  for (const int64_t id : to_release_) {
    auto& entry = *entries_.at(id);
    if (!entry.added) continue;
    step.released.push_back(id);
    give_back(avail, report, id);
  }
  for (const int64_t id : to_release_) entries_.erase(id);
  to_release_.clear();

  for (;;) {  // what the running sequences need this step; preempt the newest until it fits
    std::vector<int64_t> need(static_cast<size_t>(geometry_.tp()), 0);
    for (const int64_t id : running_) {
      auto& e = *entries_.at(id);
      if (const auto it = report.tail_tokens.find(id); it != report.tail_tokens.end()) e.tail = it->second;
      const int64_t rows = e.decoding ? 1 : static_cast<int64_t>(e.input.size()) - e.prefilled;
      const bool compressing = e.decoding ? e.compress_due() : e.compresses();
      const bool copies = kvstore::is_dimension_method(e.request.compression.method);
      const auto held = report.sequence_blocks.find(id);
      for (int r = 0; r < geometry_.tp(); ++r) {
        const int64_t blocks = geometry_.blocks_for(r, e.tail, rows);
        const int64_t now_held = held == report.sequence_blocks.end() ? 0 : held->second[r];
        need[r] +=
            blocks +
            (compressing ? headroom(geometry_, r, !e.decoding, e.tail + rows, now_held + blocks, copies) : 0);
      }
    }
    bool fits = true;
    for (int r = 0; r < geometry_.tp(); ++r) fits = fits && need[r] <= avail[r];
    if (fits || running_.empty()) {
      for (int r = 0; r < geometry_.tp(); ++r) avail[r] -= need[r];
      break;
    }
    preempt(*entries_.at(running_.back()), avail, report, step);
  }
  while (!waiting_.empty() && running() < limits_.max_num_seqs) {
    if (!admit(*entries_.at(waiting_.front()), avail, step, now)) break;
  }
  add_rows(step);
  // Sequences that finished while waiting (too large for the pool) hold nothing on the ranks.
  std::erase_if(to_release_, [&](int64_t id) {
    if (entries_.at(id)->added) return false;
    entries_.erase(id);
    return true;
  });
  compressed_last_step_.clear();
  for (const auto& c : step.compress) compressed_last_step_.push_back(c.id);
  step.end_of_run = entries_.empty() && step.empty();
  return step;
}

// Decode rows first (one token each), then prefill chunks in admission order up to the token budget.
void Scheduler::add_rows(StepMessage& step) {
  int64_t budget = limits_.max_num_batched_tokens;
  for (const int64_t id : running_) {
    auto& e = *entries_.at(id);
    if (!e.decoding || budget == 0) continue;
    step.rows.push_back({id, {e.next}, true});
    if (e.compress_due()) {
      // DynaKV alone evicts nothing: it keeps its share of the grown sequence.
      const auto& spec = e.request.compression;
      const bool share = spec.method == "dynakv" && spec.budget_fraction > 0.0;
      step.compress.push_back({id, share ? spec.budget_tokens_for(e.positions() + 1) : e.budget_tokens});
    }
    --budget;
  }
  for (const int64_t id : running_) {
    auto& e = *entries_.at(id);
    if (e.decoding || budget == 0) continue;
    const int64_t chunk = std::min(budget, static_cast<int64_t>(e.input.size()) - e.prefilled);
    const bool last = e.prefilled + chunk == static_cast<int64_t>(e.input.size());
    step.rows.push_back({id, {e.input.begin() + e.prefilled, e.input.begin() + e.prefilled + chunk}, last});
    if (last && e.compresses()) {
      if (e.budget_tokens == 0) e.budget_tokens = e.request.compression.budget_tokens_for(e.input.size());
      step.compress.push_back({id, e.budget_tokens});
    }
    budget -= chunk;
  }
}

void Scheduler::sampled_logits(const StepMessage& step, std::span<const float> logits, int64_t vocab,
                               const std::set<int64_t>& not_run, double now) {
  int64_t row = 0;
  for (const auto& rows : step.rows) {
    if (not_run.contains(rows.id)) continue;
    auto it = entries_.find(rows.id);
    if (it == entries_.end()) continue;
    auto& e = *it->second;
    if (e.decoding) {
      ++e.decode_steps;
    } else {
      e.prefilled += static_cast<int64_t>(rows.tokens.size());
    }
    if (!rows.logits) continue;
    const auto row_logits = logits.subspan(static_cast<size_t>(row++ * vocab), static_cast<size_t>(vocab));
    if (e.finished) continue;  // failed in this step's compression
    if (!e.decoding && !e.result->tokens.empty()) {
      // recomputed after a preemption: continue with the token sampled before
      e.decoding = true;
      e.next = e.result->tokens.back();
      continue;
    }
    e.decoding = true;
    accept_token(e, e.sampler.sample(row_logits), now);
  }
}

void Scheduler::accept_token(Entry& e, TokenId token, double now) {
  auto& result = *e.result;
  if (result.tokens.empty()) result.first_token_seconds = now;
  result.tokens.push_back(token);
  e.next = token;
  const bool keep_going = !e.request.on_token || e.request.on_token(token);
  const size_t old_size = e.text.size();
  e.text += e.decoder.push(token);
  if (!e.request.ignore_eos && tokenizer_.is_end_of_generation(token))
    return finish(e, FinishReason::kEndOfGeneration, now);
  for (const auto& stop : e.request.stop) {  // a new match ends in the text this token added
    const size_t from = old_size >= stop.size() ? old_size - stop.size() + 1 : 0;
    if (!stop.empty() && e.text.find(stop, from) != std::string::npos)
      return finish(e, FinishReason::kStopString, now);
  }
  if (!keep_going) return finish(e, FinishReason::kStoppedByCaller, now);
  if (static_cast<int64_t>(result.tokens.size()) >= e.request.max_tokens)
    return finish(e, FinishReason::kMaxTokens, now);
  if (e.positions() >= limits_.context_size) return finish(e, FinishReason::kContextFull, now);
}

}  // namespace kvshrink::engine
