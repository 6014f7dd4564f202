#include "engine/serving/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "engine/generation/stop_strings.h"
#include "kvstore/press_registry.h"

namespace kvshrink::engine {

struct Scheduler::Entry {
  Entry(int64_t id, Request request, RequestResult& result, const Tokenizer& tokenizer, size_t variant = 0)
      : id(id),
        variant(variant),
        request(std::move(request)),
        result(&result),
        sampler(this->request.sampling),
        decoder(tokenizer) {}

  int64_t id;
  size_t variant;  // what Request::on_finish calls it: 0 the request itself, i its fork i - 1
  Request request;
  RequestResult* result;
  Sampler sampler;
  StreamingDecoder decoder;
  std::string text;  // generated so far (for stop strings)
  // To prefill: prompt, continuation, and after a preemption the generated tokens but `next`.
  std::vector<TokenId> input;
  int64_t prefilled = 0;    // tokens of input run so far
  int64_t tail = 0;         // tokens in each head's tail segment (as reported)
  bool added = false;       // the ranks hold a store for it
  bool decoding = false;    // prefill done: each step runs `next`
  bool compressed = false;  // the first compression ran (or it was forked compressed)
  bool finished = false;
  bool started = false;       // its first rows were scheduled
  bool just_forked = false;   // made in this step: its rows start in the next one
  TokenId next = 0;           // sampled, to run in the next step
  int64_t decode_steps = 0;   // decode rows run since the last prefill
  int64_t budget_tokens = 0;  // resolved for the prompt
  size_t forks_made = 0;      // of request.forks
  int64_t positions() const { return prefilled + decode_steps; }
  // Where the prompt ends: the first compression runs there, and the forks copy what is held there.
  int64_t compress_at() const { return static_cast<int64_t>(request.prompt.size()); }
  bool compresses() const { return request.compression.enabled(); }
  bool copies() const { return kvstore::is_dimension_method(request.compression.method); }
  bool forks_pending() const { return forks_made < request.forks.size(); }
  // Prefilled to the prompt's end with forks still to make: runs no rows until they are made.
  bool paused() const { return forks_pending() && prefilled >= compress_at(); }
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

void Scheduler::submit(Request request, RequestResult& result, double now, const std::string& error) {
  const int64_t id = next_id_++;
  result = RequestResult{};
  result.forks.resize(request.forks.size());
  auto entry = std::make_unique<Entry>(id, std::move(request), result, tokenizer_);
  entry->input = entry->request.prompt;
  entry->input.insert(entry->input.end(), entry->request.continuation.begin(),
                      entry->request.continuation.end());
  result.prompt_tokens = static_cast<int64_t>(entry->input.size());
  result.arrival_seconds = now;
  auto& e = *entries_.emplace(id, std::move(entry)).first->second;
  if (!error.empty()) {
    result.error = error;
    return finish(e, FinishReason::kError, now);  // never added: retired in the next step
  }
  if (e.compresses()) result.budget_tokens = e.request.compression.budget_tokens_for(e.compress_at());
  e.budget_tokens = result.budget_tokens;
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

// The entry's result is final: tell the front end (and, for forks never made because their
// request failed, give them its error), then forget it.
void Scheduler::retire(int64_t id) {
  auto& entry = *entries_.at(id);
  const auto& on_finish = entry.request.on_finish;
  if (on_finish) on_finish(entry.variant, *entry.result);
  for (size_t f = entry.forks_made; f < entry.request.forks.size(); ++f) {
    auto& fork = entry.result->forks[f];
    fork.finish = FinishReason::kError;
    fork.error = entry.result->error;
    fork.prompt_tokens = entry.result->prompt_tokens;
    if (on_finish) on_finish(f + 1, fork);
  }
  entries_.erase(id);
}

// Requests whose front end gave up on them (Request::cancelled) end now; the ones the ranks hold
// are released in this step. A fork goes with its request.
void Scheduler::finish_cancelled(double now) {
  for (auto& [id, entry] : entries_) {
    if (entry->finished) continue;
    const auto& cancelled = entry->request.cancelled;
    if (cancelled && cancelled()) finish(*entry, FinishReason::kStoppedByCaller, now);
  }
}

// Blocks rank r may need beyond what a sequence holds while it is compressed. Token eviction
// compacts in place: nothing when the store is one segment (the first compression, at the
// prompt's end), else the tail's kept tokens appended to the compacted segment (at most the
// tail's blocks plus one per head). A dimension-level method builds a copy: as much as the
// sequence holds.
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

// At most what fork f of `parent` takes on rank r in the step that makes it: the copy of the
// prompt's KV (twice that for a dimension-level method, which copies, then re-encodes), and its
// first rows (the continuation, or one decode token).
int64_t Scheduler::fork_blocks(const Entry& parent, size_t f, int r) const {
  const bool copies = kvstore::is_dimension_method(parent.request.forks[f].method);
  const int64_t prompt = geometry_.blocks_for(r, 0, parent.compress_at());
  const auto rest = static_cast<int64_t>(parent.input.size()) - parent.compress_at();
  return (copies ? 2 : 1) * prompt + geometry_.blocks_for(r, 0, rest + 1);
}

// Room for a sequence that re-compacts every N decode steps (compress_every) on rank r, beside
// what it holds and what this step reserves for it (`has`): at most its compacted segment (the
// budget at its next compaction) and a full tail of N tokens, and at its compaction the headroom
// of that (one compaction at a time is counted: the sequences compact in different steps). That
// bounds its growth, so admission keeps room for it: a prefill admitted into that room would be
// preempted as soon as the others grow, and its prefill recomputed. Sequences that never
// re-compact grow without such a bound and get no room kept: as in vLLM, the newest is preempted
// when they run out.
void Scheduler::keep_growth_room(const Entry& entry, int r, int64_t has, GrowthRoom& room) const {
  const int64_t every = entry.request.compression.compress_every;
  if (!entry.compresses() || every <= 0 || entry.paused()) return;
  const int64_t at_compaction = entry.positions() + every - entry.decode_steps % every;
  const int64_t budget = entry.request.compression.budget_tokens_for(at_compaction);
  const int64_t cycle = geometry_.blocks_for(r, 0, budget) + geometry_.blocks_for(r, 0, every);
  room.growth += std::max<int64_t>(0, cycle - has);
  room.compaction = std::max(room.compaction, headroom(geometry_, r, false, every, 0, false));
}

void Scheduler::preempt(Entry& entry, std::vector<int64_t>& avail, const StepReport& report,
                        StepMessage& step) {
  give_back(avail, report, entry.id);
  step.released.push_back(entry.id);
  std::erase(running_, entry.id);
  waiting_.push_front(entry.id);
  // Recompute later: prefill the prompt (compressed at its end again), the continuation and what
  // was generated, then sample the next token.
  const auto& generated = entry.result->tokens;
  entry.input = entry.request.prompt;
  entry.input.insert(entry.input.end(), entry.request.continuation.begin(), entry.request.continuation.end());
  entry.input.insert(entry.input.end(), generated.begin(), generated.end());
  if (entry.decoding && !generated.empty()) entry.input.pop_back();  // `next` follows the last row
  entry.decoding = false;
  entry.compressed = false;
  entry.prefilled = 0;
  entry.decode_steps = 0;
  entry.tail = 0;
  entry.added = false;
  entry.result->preemptions += 1;
  ++preemptions_;
}

bool Scheduler::admit(Entry& entry, std::vector<int64_t>& avail, StepMessage& step, double now) {
  const auto n = static_cast<int64_t>(entry.input.size());
  std::vector<int64_t> need(static_cast<size_t>(geometry_.tp()));
  for (int r = 0; r < geometry_.tp(); ++r) {
    const int64_t prefill = geometry_.blocks_for(r, 0, n + 1);
    need[r] = prefill + (entry.compresses() ? headroom(geometry_, r, true, n, prefill, entry.copies()) : 0);
    // It must also be able to hold its largest fork beside itself, or its forks could never be made.
    int64_t largest_fork = 0;
    for (size_t f = entry.forks_made; f < entry.request.forks.size(); ++f)
      largest_fork = std::max(largest_fork, fork_blocks(entry, f, r));
    if (need[r] + largest_fork > geometry_.capacity_blocks) {
      entry.result->error = fmt::format(
          "the request needs {} KV blocks on rank {} at full size (prompt {} tokens{}), more than the "
          "pool's {} (raise --kv-memory or shorten the prompt)",
          need[r] + largest_fork, r, n,
          entry.compresses() ? ", plus room to compress" : (largest_fork > 0 ? ", plus one fork" : ""),
          geometry_.capacity_blocks);
      finish(entry, FinishReason::kError, now);
      return true;
    }
  }
  // One request with forks at a time: its forks are made before the next one's prefill holds the pool.
  const auto forking = [&](int64_t id) { return entries_.at(id)->forks_pending(); };
  if (entry.forks_pending() && std::any_of(running_.begin(), running_.end(), forking)) return false;
  std::vector<GrowthRoom> room = growth_room_;
  for (int r = 0; r < geometry_.tp(); ++r) {
    keep_growth_room(entry, r, need[r], room[r]);
    // (alone, it runs even where the room does not fit: preemption is then its only risk)
    const int64_t kept = running_.empty() ? 0 : room[r].blocks();
    if (need[r] + kept > avail[r]) return false;
  }
  growth_room_ = std::move(room);
  for (int r = 0; r < geometry_.tp(); ++r) avail[r] -= need[r];
  waiting_.pop_front();
  running_.push_back(entry.id);
  entry.added = true;
  step.added.push_back({entry.id, entry.request.compression, entry.request.forks});
  return true;
}

// The forks of paused sequences, in admission order, while the pool can hold them. A fork is a
// sequence of its own from this step on (the ranks copy it in this step; its rows start in the
// next); its request resumes once all are made (query-aware: the first token, sampled at full KV,
// is every variant's first token).
void Scheduler::make_forks(std::vector<int64_t>& avail, StepMessage& step, double now) {
  const std::vector<int64_t> order = running_;
  // A paused sequence runs no rows: it does not count against --max-num-seqs.
  auto active =
      std::count_if(order.begin(), order.end(), [&](int64_t id) { return !entries_.at(id)->paused(); });
  for (const int64_t id : order) {
    auto& parent = *entries_.at(id);
    while (parent.paused() && active < limits_.max_num_seqs) {
      const size_t f = parent.forks_made;
      bool fits = true;
      for (int r = 0; r < geometry_.tp(); ++r) fits = fits && fork_blocks(parent, f, r) <= avail[r];
      if (!fits) return;  // later ones wait too: forks are made in order
      for (int r = 0; r < geometry_.tp(); ++r) avail[r] -= fork_blocks(parent, f, r);
      Request request = parent.request;
      request.compression = parent.request.forks[f];
      request.forks.clear();
      const int64_t child_id = next_id_++;
      auto child =
          std::make_unique<Entry>(child_id, std::move(request), parent.result->forks[f], tokenizer_, f + 1);
      auto& c = *child;
      *c.result = RequestResult{};
      c.result->prompt_tokens = parent.result->prompt_tokens;
      c.result->arrival_seconds = parent.result->arrival_seconds;
      if (c.compresses()) c.result->budget_tokens = c.request.compression.budget_tokens_for(c.compress_at());
      c.budget_tokens = c.result->budget_tokens;
      c.input = parent.input;
      c.prefilled = parent.compress_at();
      c.compressed = true;
      c.added = true;
      c.just_forked = true;
      step.forks.push_back({child_id, id, static_cast<int64_t>(f), c.budget_tokens});
      running_.push_back(child_id);
      ++active;
      ++parent.forks_made;
      entries_.emplace(child_id, std::move(child));
      if (c.request.continuation.empty()) {  // query-aware: decode from the first token
        c.decoding = true;
        accept_token(c, parent.next, now);
      }
    }
    if (parent.decoding && !parent.forks_pending() && parent.result->tokens.empty())
      accept_token(parent, parent.next, now);
  }
}

// Memory first (what the released sequences free, what the running ones need this step,
// preempting the newest while some rank cannot hold it), then forks, then admission in arrival
// order, then the rows.
StepMessage Scheduler::next_step(const StepReport& report, double now) {
  StepMessage step;
  for (const auto& [id, error] : report.failed) {
    if (auto it = entries_.find(id); it != entries_.end() && !it->second->finished) {
      it->second->result->error = error;
      finish(*it->second, FinishReason::kError, now);
    }
  }
  for (auto& [id, entry] : entries_) {
    if (!report.bytes_held.contains(id)) continue;
    auto& result = *entry->result;
    result.kv_bytes_held = report.bytes_held.at(id);
    result.kv_bytes_full = report.bytes_full.at(id);
    if (result.kv_bytes_full_compressed == 0) {  // after a recompute, the first figures stay
      result.kv_bytes_compressed = report.bytes_at_compression.at(id);
      result.kv_bytes_full_compressed = report.full_at_compression.at(id);
    }
  }
  finish_cancelled(now);
  std::vector<int64_t> avail = report.free_blocks;
  for (const int64_t id : to_release_) {
    if (!entries_.at(id)->added) continue;
    step.released.push_back(id);
    give_back(avail, report, id);
    retire(id);
  }
  std::erase_if(to_release_, [&](int64_t id) { return !entries_.contains(id); });
  reserve_running(avail, report, step);
  make_forks(avail, step, now);
  while (!waiting_.empty() && running() < limits_.max_num_seqs) {
    if (!admit(*entries_.at(waiting_.front()), avail, step, now)) break;
  }
  add_rows(step, now);
  // Sequences that finished while waiting (too large for the pool) hold nothing on the ranks.
  std::erase_if(to_release_, [&](int64_t id) {
    if (entries_.at(id)->added) return false;
    retire(id);
    return true;
  });
  step.end_of_run = entries_.empty() && step.empty();
  return step;
}

// What the running sequences need this step; preempts the newest until it fits. Takes the rows'
// blocks out of avail. (A paused sequence needs nothing: its forks wait for room, which the
// others free as they finish; admission made sure it can hold one fork beside itself.)
void Scheduler::reserve_running(std::vector<int64_t>& avail, const StepReport& report, StepMessage& step) {
  for (;;) {
    std::vector<int64_t> need(static_cast<size_t>(geometry_.tp()), 0);
    std::vector<GrowthRoom> room(static_cast<size_t>(geometry_.tp()));
    for (const int64_t id : running_) {
      auto& e = *entries_.at(id);
      if (const auto it = report.tail_tokens.find(id); it != report.tail_tokens.end()) e.tail = it->second;
      if (e.paused()) continue;
      const int64_t rows = e.decoding ? 1 : static_cast<int64_t>(e.input.size()) - e.prefilled;
      const bool compressing = e.decoding ? e.compress_due() : e.compresses() && !e.compressed;
      const auto held = report.sequence_blocks.find(id);
      for (int r = 0; r < geometry_.tp(); ++r) {
        const int64_t blocks = geometry_.blocks_for(r, e.tail, rows);
        const int64_t now_held = held == report.sequence_blocks.end() ? 0 : held->second[r];
        need[r] += blocks + (compressing ? headroom(geometry_, r, !e.compressed, e.tail + rows,
                                                    now_held + blocks, e.copies())
                                         : 0);
        keep_growth_room(e, r, now_held + blocks, room[r]);
      }
    }
    bool fits = true;
    for (int r = 0; r < geometry_.tp(); ++r) fits = fits && need[r] <= avail[r];
    if (fits || running_.empty()) {
      for (int r = 0; r < geometry_.tp(); ++r) avail[r] -= need[r];
      growth_room_ = std::move(room);
      return;
    }
    preempt(*entries_.at(running_.back()), avail, report, step);
  }
}

// Decode rows first (one token each), then prefill chunks in admission order up to the token
// budget; a chunk ends at the prompt's end, where the first compression runs (or the forks copy).
void Scheduler::add_rows(StepMessage& step, double now) {
  int64_t budget = limits_.max_num_batched_tokens;
  const auto runs = [&](Entry& e) {  // its rows may run now (a fork's copy is made in a step of its own)
    if (e.paused() || std::exchange(e.just_forked, false)) return false;
    if (!e.started) e.result->start_seconds = now;
    e.started = true;
    return true;
  };
  for (const int64_t id : running_) {
    auto& e = *entries_.at(id);
    if (!e.decoding || budget == 0 || !runs(e)) continue;
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
    if (e.decoding || budget == 0 || !runs(e)) continue;
    const auto end = static_cast<int64_t>(e.input.size());
    const int64_t stop = e.prefilled < e.compress_at() ? e.compress_at() : end;
    const int64_t chunk = std::min(budget, stop - e.prefilled);
    step.rows.push_back({id,
                         {e.input.begin() + e.prefilled, e.input.begin() + e.prefilled + chunk},
                         e.prefilled + chunk == end});
    if (e.prefilled + chunk == e.compress_at()) {
      step.prompt_ended.push_back(id);
      if (e.compresses()) step.compress.push_back({id, e.budget_tokens});
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
      if (e.prefilled == e.compress_at()) e.compressed = e.compresses();
    }
    if (!rows.logits) continue;
    const auto row_logits = logits.subspan(static_cast<size_t>(row++ * vocab), static_cast<size_t>(vocab));
    if (e.finished) continue;  // failed in this step's compression
    const bool prefill_ended = !e.decoding;
    e.decoding = true;
    if (prefill_ended && !e.result->tokens.empty()) {
      e.next = e.result->tokens.back();  // recomputed after a preemption: the token sampled before
      continue;
    }
    e.next = e.sampler.sample(row_logits);
    if (!e.forks_pending()) accept_token(e, e.next, now);  // else once its forks are made
  }
}

void Scheduler::add_attention(const StepMessage& step, const std::set<int64_t>& not_run, double seconds) {
  std::vector<Entry*> ran;
  for (const auto& rows : step.rows) {
    if (auto it = entries_.find(rows.id); it != entries_.end() && !not_run.contains(rows.id))
      ran.push_back(it->second.get());
  }
  for (auto* e : ran) e->result->attention_seconds += seconds / static_cast<double>(ran.size());
}

void Scheduler::accept_token(Entry& e, TokenId token, double now) {
  auto& result = *e.result;
  if (result.tokens.empty()) result.first_token_seconds = now;
  result.tokens.push_back(token);
  result.token_seconds.push_back(now);
  e.next = token;
  const bool keep_going = !e.request.on_token || e.request.on_token(token);
  const size_t old_size = e.text.size();
  e.text += e.decoder.push(token);
  if (!e.request.ignore_eos && tokenizer_.is_end_of_generation(token))
    return finish(e, FinishReason::kEndOfGeneration, now);
  if (find_new_stop(e.text, old_size, e.request.stop) != std::string::npos)
    return finish(e, FinishReason::kStopString, now);
  if (!keep_going) return finish(e, FinishReason::kStoppedByCaller, now);
  if (static_cast<int64_t>(result.tokens.size()) >= e.request.max_tokens)
    return finish(e, FinishReason::kMaxTokens, now);
  if (e.positions() >= limits_.context_size) return finish(e, FinishReason::kContextFull, now);
}

}  // namespace kvshrink::engine
