// The scheduler (rank 0 only; DESIGN.md §8): waiting -> running -> finished. Each step it takes
// one decode token from every running sequence and prefill chunks up to a token budget, admits a
// waiting sequence only when every rank's pool can hold its full-KV prefill beside what the
// running ones hold (compressed, once their press ran) and what those that re-compact during
// decode add before their next compaction, and preempts the newest when decode runs out of room
// (its blocks are freed and it is recomputed later). It never fails the job for memory: a request
// larger than the whole pool fails alone.
//
// Forks (Request::forks): the request prefills its prompt once at full KV and pauses there; each
// fork becomes a sequence of its own (a compressed copy of that prefill, made on the ranks at the
// start of a step) as soon as the pool can hold it, and the request resumes once every fork is made.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/serving/kv_geometry.h"
#include "engine/serving/request.h"
#include "engine/serving/step_message.h"

namespace kvshrink::engine {

struct SchedulerLimits {
  int64_t max_num_seqs = 256;            // sequences running at once
  int64_t max_num_batched_tokens = 512;  // rows per step (decode tokens + prefill chunks)
  int64_t context_size = 0;              // positions a sequence may use (prompt + generated)
};

// What every rank reported after a step: its free blocks and the blocks each live sequence holds.
struct StepReport {
  std::vector<int64_t> free_blocks;                         // [tp]
  std::map<int64_t, std::vector<int64_t>> sequence_blocks;  // id -> [tp]
  std::map<int64_t, int64_t> tail_tokens;                   // id -> tokens in each head's tail
  std::map<int64_t, std::string> failed;                    // id -> why it failed (all ranks agree)
  std::map<int64_t, uint64_t> bytes_held, bytes_full;       // id -> token bytes over all ranks
  // id -> token bytes over all ranks at its compression point (0 until it is reached)
  std::map<int64_t, uint64_t> bytes_at_compression, full_at_compression;
};

class Scheduler {
 public:
  Scheduler(const SchedulerLimits& limits, const KvGeometry& geometry, const Tokenizer& tokenizer);
  ~Scheduler();

  // Queues a request (validated by the caller); its result is written to `result`. With an error
  // (the caller refused it), it ends at once with that error, and so does each of its forks.
  void submit(Request request, RequestResult& result, double now, const std::string& error = "");
  // The next step, from what the ranks reported after the last one. end_of_run once nothing is left.
  StepMessage next_step(const StepReport& report, double now);
  // After the step's forward: the logits rows of the step's rows with logits, in order
  // [rows x vocab], leaving out the sequences in not_run (they failed before their rows ran).
  // Samples and applies stop conditions.
  void sampled_logits(const StepMessage& step, std::span<const float> logits, int64_t vocab,
                      const std::set<int64_t>& not_run, double now);

  // Rank 0's attention time in the step, shared evenly by the sequences whose rows ran.
  void add_attention(const StepMessage& step, const std::set<int64_t>& not_run, double seconds);

  int64_t running() const;
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t preemptions() const { return preemptions_; }  // since the scheduler was made
  bool idle() const { return entries_.empty(); }        // nothing waits, runs or is left to release

 private:
  struct Entry;
  void finish(Entry& entry, FinishReason reason, double now);
  void preempt(Entry& entry, std::vector<int64_t>& avail, const StepReport& report, StepMessage& step);
  bool admit(Entry& entry, std::vector<int64_t>& avail, StepMessage& step, double now);
  void add_rows(StepMessage& step, double now);
  void accept_token(Entry& entry, TokenId token, double now);
  void reserve_running(std::vector<int64_t>& avail, const StepReport& report, StepMessage& step);
  void make_forks(std::vector<int64_t>& avail, StepMessage& step, double now);
  int64_t fork_blocks(const Entry& parent, size_t fork, int rank) const;
  void retire(int64_t id);
  // Blocks admission keeps free on a rank for the sequences that re-compact during decode.
  struct GrowthRoom {
    int64_t growth = 0;      // what they add until their next compaction
    int64_t compaction = 0;  // the largest headroom one compaction takes
    int64_t blocks() const { return growth + compaction; }
  };
  void keep_growth_room(const Entry& entry, int rank, int64_t has, GrowthRoom& room) const;
  std::vector<GrowthRoom> growth_room_;  // [tp], from reserve_running, grown by each admission
  void finish_cancelled(double now);

  SchedulerLimits limits_;
  KvGeometry geometry_;
  const Tokenizer& tokenizer_;
  int64_t next_id_ = 0;
  std::map<int64_t, std::unique_ptr<Entry>> entries_;  // every request not yet released
  std::deque<int64_t> waiting_;                        // ids, in arrival order (preempted first)
  std::vector<int64_t> running_;                       // ids, in admission order
  std::vector<int64_t> to_release_;
  int64_t preemptions_ = 0;
};

}  // namespace kvshrink::engine
