// The composition root (DESIGN.md §1, §8): on every rank, the backend, this rank's model shard,
// the tokenizer, the KV pool and (rank 0) the scheduler, built from options. Front ends submit
// requests to run() and read tokens back; the ranks advance in steps that rank 0 sends as one
// message each (step_message.h).
//
//   engine::Engine engine(options, control, data);        // collective: loads the shard
//   auto results = engine.run(std::move(requests));       // collective; rank 0's requests count
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "comm/world.h"
#include "engine/compression/kv_compressor.h"
#include "engine/model/loaded_model.h"
#include "engine/serving/request.h"
#include "engine/serving/request_inbox.h"
#include "engine/serving/scheduler.h"
#include "kernels/backend_factory.h"
#include "kvstore/kv_memory_pool.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

struct EngineOptions {
  std::string model;                     // GGUF file
  int64_t context_size = 0;              // 0 = the model's trained context
  int64_t max_num_batched_tokens = 512;  // rows per step
  int64_t max_num_seqs = 256;            // sequences running at once
  uint64_t kv_memory = 0;                // KV pool bytes per rank; 0 = default_kv_memory()
  kernels::BackendOptions backend;       // --matmul-activations, --device
};

// The default KV pool per rank: half of the memory available now (MemAvailable), shared by the
// ranks on this node.
uint64_t default_kv_memory(const comm::World& world);

// Figures of the last run (rank 0).
struct RunStats {
  double seconds = 0.0;
  int64_t steps = 0;
  double mean_running = 0.0;  // sequences running per step
  int64_t peak_running = 0;
  uint64_t pool_peak_bytes = 0;  // the most any rank's pool held in blocks
  uint64_t pool_capacity_bytes = 0;
};

class Engine {
 public:
  // Collective: every rank loads its shard; a failure anywhere is a comm::JobError on every rank.
  Engine(const EngineOptions& options, comm::Communicator& control, comm::Communicator& data);
  ~Engine();

  // Collective. Runs every request of rank 0 to its end (the other ranks pass anything) and returns
  // their results on rank 0 (empty elsewhere). A bad request (empty or over-long prompt, unknown
  // press, budget out of range, larger than the pool) fails alone with its error; so does a request
  // with a bad fork (the request and all its forks).
  std::vector<RequestResult> run(std::vector<Request> requests);
  // Collective. Runs the requests that arrive in rank 0's inbox (the other ranks pass null) as they
  // come, each failing alone as in run(), and publishes the gauges there as it plans each step; returns
  // on every rank once the inbox is closed and every request in it has ended.
  void serve(RequestInbox* inbox);
  const RunStats& last_run() const { return stats_; }

  // Collective: the compressor of spec, loaded now if it was not (its side files read and checked);
  // a bad spec or side file is a comm::JobError on every rank. Requests share it by compression_key.
  KvCompressor& compressor(const CompressionSpec& spec) { return *compressor_for(spec); }

  LlamaModel& model() { return *loaded_.model; }
  const Tokenizer& tokenizer() const { return *loaded_.tokenizer; }
  const LoadedModel& loaded() const { return loaded_; }
  int64_t context_size() const { return context_size_; }
  kvstore::KvMemoryPool& pool() { return *pool_; }
  comm::Communicator& data_plane() { return data_; }

 private:
  struct Live {
    kvstore::KvStore kv;
    KvCompressor* compressor;
    std::vector<KvCompressor*> fork_compressors;  // [Added::forks index]; null: full KV
    // This rank's token bytes at the compression point (right after the first compression, or the
    // fork; full KV: after the prompt's prefill), and full KV's there; 0 until then.
    uint64_t bytes_at_compression = 0, full_at_compression = 0;
    void note_compression_point() {
      if (full_at_compression == 0)
        bytes_at_compression = kv.bytes_held(), full_at_compression = kv.full_bytes();
    }
  };
  std::string request_error(const Request& request) const;
  KvCompressor* compressor_for(const CompressionSpec& spec);
  void execute(const StepMessage& step, std::map<int64_t, std::string>& failed, std::vector<float>& logits,
               std::set<int64_t>& not_run);
  void add_sequences(const StepMessage& step, std::map<int64_t, std::string>& failed);
  void fork(const StepMessage& step, std::map<int64_t, std::string>& failed);
  void compress(const StepMessage& step, std::map<int64_t, std::string>& failed);
  StepReport report(std::map<int64_t, std::string> failed);
  KvGeometry geometry() const;
  SchedulerLimits scheduler_limits() const;
  void begin_run();
  bool run_step(Scheduler& scheduler, StepMessage& step, StepReport& last);
  void end_run();
  double seconds_since_start() const;
  uint64_t pool_used_bytes(const StepReport& report) const;
  ServingGauges gauges(const Scheduler& scheduler, const StepReport& last) const;

  EngineOptions options_;
  comm::Communicator& control_;
  comm::Communicator& data_;
  LoadedModel loaded_;
  int64_t context_size_ = 0;
  std::shared_ptr<kvstore::KvMemoryPool> pool_;
  std::map<std::string, std::unique_ptr<KvCompressor>> compressors_;  // by compression_key()
  std::map<int64_t, Live> live_;                                      // sequences the ranks hold
  RunStats stats_;
  double running_sum_ = 0.0;  // running sequences summed over the run's steps
  std::chrono::steady_clock::time_point run_start_;
};

}  // namespace kvshrink::engine
