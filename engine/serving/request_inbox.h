// Requests that arrive while the engine runs (DESIGN.md §1: HTTP, a JSONL batch file): front-end
// threads submit them, Engine::serve takes them on rank 0 between steps, and publishes what it
// holds as it plans each step (ServingGauges) for the front end's metrics and back-pressure.
//
//   engine::RequestInbox inbox(/*max_waiting=*/256);
//   std::thread front_end([&] { inbox.submit(std::move(request)); ...; inbox.close(); });
//   engine.serve(&inbox);  // collective: returns on every rank once closed and drained
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "engine/serving/request.h"

namespace kvshrink::engine {

// The engine's state after its last step (rank 0).
struct ServingGauges {
  int64_t running = 0;               // sequences admitted (holding KV)
  int64_t waiting = 0;               // queued in the scheduler or the inbox
  uint64_t pool_used_bytes = 0;      // block bytes on the fullest rank
  uint64_t pool_capacity_bytes = 0;  // per rank
  uint64_t kv_bytes_held = 0;        // token bytes of the live sequences, all ranks
  uint64_t kv_bytes_full = 0;        // what full KV would hold for them
  int64_t preemptions = 0;           // since the engine started serving
  int64_t steps = 0;
};

class RequestInbox {
 public:
  // max_waiting: requests queued (here and in the scheduler) beyond which submit refuses; 0 = no limit.
  explicit RequestInbox(int64_t max_waiting = 0) : max_waiting_(max_waiting) {}

  enum class Submitted { kQueued, kFull, kClosed };
  // Any thread. kFull: the waiting queue is at its limit (answer 429); kClosed: shutting down.
  Submitted submit(Request request);
  // Any thread: no more requests; serve() returns once the queued and running ones have ended.
  void close();
  bool closed() const;

  // The engine (rank 0): every queued request, waiting up to `wait` for one when none is queued.
  std::vector<Request> take(std::chrono::milliseconds wait);
  void publish(const ServingGauges& gauges);
  ServingGauges gauges() const;
  // The engine marks each step it runs; a front end reads how long the current one has taken (0
  // between steps): a step that takes far longer than steps do waits on a rank that stopped.
  void step_begins();
  void step_ends();
  double seconds_in_step() const;

 private:
  const int64_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<Request> queued_;
  bool closed_ = false;
  ServingGauges gauges_;
  std::atomic<int64_t> step_began_ns_{0};  // steady clock; 0 = not in a step
};

}  // namespace kvshrink::engine
