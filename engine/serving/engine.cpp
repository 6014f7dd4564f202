#include "engine/serving/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <list>
#include <string>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "engine/model/tensor_parallel_split.h"

namespace kvshrink::engine {

uint64_t default_kv_memory(const comm::World& world) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") break;
    meminfo.ignore(64, '\n');
  }
  return kib * 1024 / 2 / static_cast<uint64_t>(std::max(1, world.local_size));
}

Engine::Engine(const EngineOptions& options, comm::Communicator& control, comm::Communicator& data)
    : options_(options),
      control_(control),
      data_(data),
      loaded_(load_model(options.model, data, options.max_num_batched_tokens, options.backend)) {
  const auto& config = loaded_.model->config();
  context_size_ = context_size_or_default(options.context_size, config, control_);
  const uint64_t capacity = options.kv_memory != 0 ? options.kv_memory : default_kv_memory(control.world());
  const uint64_t block_bytes = kvstore::HeadSegment::block_bytes(config.head_dim, loaded_.model->kv_dtype());
  comm::check_all(control_, capacity >= block_bytes,
                  fmt::format("--kv-memory {} bytes holds no KV block ({} bytes)", capacity, block_bytes));
  pool_ = std::make_shared<kvstore::KvMemoryPool>(capacity, block_bytes, loaded_.backend.get());
}

Engine::~Engine() = default;

KvGeometry Engine::geometry() const {
  const auto& config = loaded_.model->config();
  KvGeometry g;
  g.n_layers = config.n_layers;
  for (int r = 0; r < control_.world().size; ++r)
    g.kv_heads.push_back(split_range(config.n_head_kv, control_.world().size, r).size());
  g.block_tokens = kvstore::HeadSegment::kBlockTokens;
  g.capacity_blocks = pool_->capacity_blocks();
  return g;
}

// Why rank 0 must refuse a request before it runs ("" when it may run).
std::string Engine::request_error(const Request& request) const {
  const auto n = static_cast<int64_t>(request.prompt.size());
  if (n == 0) return "the prompt is empty";
  if (n >= context_size_) {
    return fmt::format(
        "the prompt has {} tokens but the context holds {} (it must leave room for at least one "
        "generated token; see --ctx-size)",
        n, context_size_);
  }
  const auto total = n + static_cast<int64_t>(request.continuation.size());
  if (total >= context_size_) {
    return fmt::format(
        "the prompt and its continuation have {} tokens but the context holds {} (see --ctx-size)", total,
        context_size_);
  }
  if (request.max_tokens < 1) return fmt::format("max tokens {} must be at least 1", request.max_tokens);
  const int64_t vocab = loaded_.model->config().vocab_size;
  for (const auto* part : {&request.prompt, &request.continuation}) {
    for (const TokenId id : *part) {
      if (id < 0 || id >= vocab) return fmt::format("token id {} outside the vocabulary [0, {})", id, vocab);
    }
  }
  if (!request.forks.empty() && request.compression.enabled())
    return "a request with forks must itself be full KV (its prefill is what the forks copy)";
  try {
    validate(request.sampling);
    validate(request.compression);
    check_budget_reachable(request.compression, n);
    for (size_t i = 0; i < request.forks.size(); ++i) {
      try {
        validate(request.forks[i]);
        check_budget_reachable(request.forks[i], n);
      } catch (const std::exception& e) {
        throw std::invalid_argument(fmt::format("fork {} ({}): {}", i, request.forks[i].label(), e.what()));
      }
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

KvCompressor* Engine::compressor_for(const CompressionSpec& spec) {
  const std::string key = compression_key(spec);
  auto it = compressors_.find(key);
  if (it == compressors_.end()) {
    it = compressors_
             .emplace(key, make_compressor(spec, *loaded_.model, data_, loaded_.path, loaded_.identity,
                                           *loaded_.tokenizer))
             .first;
  }
  return it->second.get();
}

// New sequences get an empty store (and their compressor, loaded collectively: a bad side file
// fails that sequence alone, on every rank alike); a sequence with forks records what every
// fork's press needs (recent queries, attention mass).
void Engine::add_sequences(const StepMessage& step, std::map<int64_t, std::string>& failed) {
  const auto compressor_or_null = [&](const CompressionSpec& spec) {
    return spec.enabled() ? compressor_for(spec) : nullptr;
  };
  for (const auto& added : step.added) {
    KvCompressor* compressor = nullptr;
    std::vector<KvCompressor*> fork_compressors;
    try {
      compressor = compressor_or_null(added.compression);
      for (const auto& spec : added.forks) fork_compressors.push_back(compressor_or_null(spec));
    } catch (const comm::JobError& e) {
      failed[added.id] = e.what();
      continue;
    }
    kvstore::KvStoreOptions options;
    for (auto* c : fork_compressors) {
      if (c) options = kvstore::covering(options, c->store_options());
    }
    if (compressor) options = kvstore::covering(options, compressor->store_options());
    live_.emplace(added.id, Live{loaded_.model->make_kv_store(options, pool_), compressor,
                                 std::move(fork_compressors)});
  }
}

// The step's forks, planned in one exchange: each a copy of its parent's store compressed under
// the fork's setting (full KV: a plain copy). A plan error fails that fork alone.
void Engine::fork(const StepMessage& step, std::map<int64_t, std::string>& failed) {
  std::vector<PlanJob> jobs;
  std::vector<size_t> job_of(step.forks.size(), SIZE_MAX);  // [fork]: its job, or none (full KV)
  std::vector<Live*> parents;
  for (size_t f = 0; f < step.forks.size(); ++f) {
    const auto& fork = step.forks[f];
    Live& parent = live_.at(fork.parent);
    parents.push_back(&parent);
    KvCompressor* compressor = parent.fork_compressors.at(static_cast<size_t>(fork.index));
    if (compressor == nullptr) continue;
    job_of[f] = jobs.size();
    jobs.push_back({compressor, &parent.kv, fork.budget_tokens, {}, {}});
  }
  if (!jobs.empty()) plan_all(jobs, data_);
  for (size_t f = 0; f < step.forks.size(); ++f) {
    const Live& parent = *parents[f];
    const int64_t id = step.forks[f].id;
    const PlanJob* job = job_of[f] == SIZE_MAX ? nullptr : &jobs[job_of[f]];
    if (job && !job->error.empty()) {
      failed[id] = job->error;
      continue;
    }
    auto kv = job ? job->compressor->compressed_copy(parent.kv, job->plan) : parent.kv.copy({});
    auto& child = live_.emplace(id, Live{std::move(kv), job ? job->compressor : nullptr, {}}).first->second;
    child.note_compression_point();
  }
}

// The step's compressions, planned in one exchange (plan_all); a plan error (a budget the method
// cannot meet) fails that sequence alone: every rank gets the same error.
void Engine::compress(const StepMessage& step, std::map<int64_t, std::string>& failed) {
  std::vector<PlanJob> jobs;
  std::vector<std::pair<int64_t, Live*>> stores;  // [job]: sequence id, its store
  for (const auto& c : step.compress) {
    auto it = live_.find(c.id);
    if (it == live_.end() || failed.contains(c.id)) continue;
    jobs.push_back({it->second.compressor, &it->second.kv, c.budget_tokens, {}, {}});
    stores.emplace_back(c.id, &it->second);
  }
  if (jobs.empty()) return;
  plan_all(jobs, data_);
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (!jobs[j].error.empty()) {
      failed[stores[j].first] = jobs[j].error;
      continue;
    }
    jobs[j].compressor->apply(stores[j].second->kv, jobs[j].plan);
    stores[j].second->note_compression_point();
  }
}

// Sequences that failed to be added are left out of the batch (not_run): the others run.
void Engine::execute(const StepMessage& step, std::map<int64_t, std::string>& failed,
                     std::vector<float>& logits, std::set<int64_t>& not_run) {
  for (const int64_t id : step.released) live_.erase(id);
  add_sequences(step, failed);
  if (!step.forks.empty()) fork(step, failed);
  for (const auto& [id, error] : failed) not_run.insert(id);
  std::vector<SequenceRows> batch;
  for (const auto& rows : step.rows) {
    if (not_run.contains(rows.id)) continue;
    auto it = live_.find(rows.id);
    if (it == live_.end()) throw std::logic_error(fmt::format("step: sequence {} is not held", rows.id));
    batch.push_back({&it->second.kv, rows.tokens, rows.logits ? LogitsFor::kLastToken : LogitsFor::kNone});
  }
  logits.clear();
  if (!batch.empty()) logits = loaded_.model->forward_step(batch);
  for (const int64_t id : step.prompt_ended) {  // full KV: its bytes where it would be compressed
    if (auto it = live_.find(id); it != live_.end() && !it->second.compressor)
      it->second.note_compression_point();
  }
  compress(step, failed);
}

// Collective (control plane): every rank's free blocks and, per live sequence, its blocks and
// token bytes now and at its compression point, as rows [free, blocks..., held..., full...,
// held at compression..., full at compression...] of a [tp x width] matrix that each rank
// fills in its own row (an all-reduce max of non-negative values then gathers it).
StepReport Engine::report(std::map<int64_t, std::string> failed) {
  const int tp = control_.world().size;
  const int rank = control_.world().rank;
  const auto n = static_cast<int64_t>(live_.size());
  const int64_t width = 1 + 5 * n;
  std::vector<int64_t> matrix(static_cast<size_t>(tp * width), 0);
  int64_t* row = matrix.data() + rank * width;
  row[0] = pool_->free_blocks();
  int64_t i = 0;
  for (const auto& [id, live] : live_) {
    row[1 + i] = static_cast<int64_t>(live.kv.block_bytes_held() / pool_->block_bytes());
    row[1 + n + i] = static_cast<int64_t>(live.kv.bytes_held());
    row[1 + 2 * n + i] = static_cast<int64_t>(live.kv.full_bytes());
    row[1 + 3 * n + i] = static_cast<int64_t>(live.bytes_at_compression);
    row[1 + 4 * n + i] = static_cast<int64_t>(live.full_at_compression);
    ++i;
  }
  control_.all_reduce_max(matrix);
  StepReport out;
  out.failed = std::move(failed);
  for (int r = 0; r < tp; ++r) out.free_blocks.push_back(matrix[r * width]);
  i = 0;
  for (const auto& [id, live] : live_) {
    auto& blocks = out.sequence_blocks[id];
    for (int r = 0; r < tp; ++r) {
      blocks.push_back(matrix[r * width + 1 + i]);
      out.bytes_held[id] += static_cast<uint64_t>(matrix[r * width + 1 + n + i]);
      out.bytes_full[id] += static_cast<uint64_t>(matrix[r * width + 1 + 2 * n + i]);
      out.bytes_at_compression[id] += static_cast<uint64_t>(matrix[r * width + 1 + 3 * n + i]);
      out.full_at_compression[id] += static_cast<uint64_t>(matrix[r * width + 1 + 4 * n + i]);
    }
    out.tail_tokens[id] = live.kv.head(0, 0).segments().back().tokens();  // the same on every head and rank
    ++i;
  }
  return out;
}

double Engine::seconds_since_start() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
}

void Engine::begin_run() {
  run_start_ = std::chrono::steady_clock::now();
  stats_ = RunStats{};
  stats_.pool_capacity_bytes = pool_->capacity();
  running_sum_ = 0.0;
}

// Collective: rank 0's step (the others' is overwritten) runs on every rank, rank 0 samples, and
// every rank reports into `last`. False once it was the end of the run.
bool Engine::run_step(Scheduler& scheduler, StepMessage& step, StepReport& last) {
  const bool coordinator = control_.world().is_coordinator();
  const int64_t running = scheduler.running();  // rank 0's count (admitted, holding KV)
  broadcast_step(control_, step);
  if (step.end_of_run) return false;
  std::map<int64_t, std::string> failed;
  std::vector<float> logits;
  std::set<int64_t> not_run;
  const double attention_before = loaded_.model->attention_seconds();
  execute(step, failed, logits, not_run);
  if (coordinator) {
    scheduler.add_attention(step, not_run, loaded_.model->attention_seconds() - attention_before);
    scheduler.sampled_logits(step, logits, loaded_.model->config().vocab_size, not_run,
                             seconds_since_start());
  }
  last = report(std::move(failed));
  ++stats_.steps;
  running_sum_ += static_cast<double>(running);
  stats_.peak_running = std::max(stats_.peak_running, running);
  stats_.pool_peak_bytes = std::max(stats_.pool_peak_bytes, pool_used_bytes(last));
  return true;
}

// Block bytes on the fullest rank after the step `report` followed.
uint64_t Engine::pool_used_bytes(const StepReport& report) const {
  const int64_t free_min = *std::min_element(report.free_blocks.begin(), report.free_blocks.end());
  return static_cast<uint64_t>(pool_->capacity_blocks() - free_min) * pool_->block_bytes();
}

void Engine::end_run() {
  stats_.seconds = seconds_since_start();
  stats_.mean_running = stats_.steps > 0 ? running_sum_ / static_cast<double>(stats_.steps) : 0.0;
}

SchedulerLimits Engine::scheduler_limits() const {
  return {options_.max_num_seqs, options_.max_num_batched_tokens, context_size_};
}

std::vector<RequestResult> Engine::run(std::vector<Request> requests) {
  const bool coordinator = control_.world().is_coordinator();
  Scheduler scheduler(scheduler_limits(), geometry(), *loaded_.tokenizer);
  begin_run();
  std::vector<RequestResult> results(coordinator ? requests.size() : 0);
  if (coordinator) {
    for (size_t i = 0; i < requests.size(); ++i) {
      const std::string error = request_error(requests[i]);
      scheduler.submit(std::move(requests[i]), results[i], 0.0, error);
    }
  }
  StepReport last = report({});
  for (;;) {
    StepMessage step = coordinator ? scheduler.next_step(last, seconds_since_start()) : StepMessage{};
    if (!run_step(scheduler, step, last)) break;
  }
  end_run();
  return results;
}

// What serve() publishes after a step.
ServingGauges Engine::gauges(const Scheduler& scheduler, const StepReport& last) const {
  ServingGauges g;
  g.running = scheduler.running();
  g.waiting = scheduler.waiting();
  g.pool_used_bytes = pool_used_bytes(last);
  g.pool_capacity_bytes = pool_->capacity();
  for (const auto& [id, bytes] : last.bytes_held) g.kv_bytes_held += bytes;
  for (const auto& [id, bytes] : last.bytes_full) g.kv_bytes_full += bytes;
  g.preemptions = scheduler.preemptions();
  g.steps = stats_.steps;
  return g;
}

void Engine::serve(RequestInbox* inbox) {
  const bool coordinator = control_.world().is_coordinator();
  Scheduler scheduler(scheduler_limits(), geometry(), *loaded_.tokenizer);
  begin_run();
  // Rank 0: the results the scheduler writes into, each kept until all its variants have ended.
  struct Held {
    RequestResult result;
    size_t unfinished = 0;
  };
  std::list<Held> held;
  const auto submit = [&](Request request) {
    auto& h = held.emplace_back();
    h.unfinished = 1 + request.forks.size();
    request.on_finish = [inner = std::move(request.on_finish), &h](size_t variant, const RequestResult& r) {
      if (inner) inner(variant, r);
      --h.unfinished;
    };
    const std::string error = request_error(request);
    scheduler.submit(std::move(request), h.result, seconds_since_start(), error);
  };
  StepReport last = report({});
  bool nothing_to_run = true;  // the last step rank 0 made was empty: wait for requests
  // While idle, an empty step every few seconds: a rank that stopped shows up as a step that does
  // not end (the front end's health check) before a request meets it.
  constexpr double kHeartbeatSeconds = 5.0;
  double last_step = seconds_since_start();
  for (;;) {
    StepMessage step;
    if (coordinator) {
      for (auto& request : inbox->take(std::chrono::milliseconds(nothing_to_run ? 20 : 0)))
        submit(std::move(request));
      if (scheduler.idle() && inbox->closed()) {
        step.end_of_run = true;
      } else {
        step = scheduler.next_step(last, seconds_since_start());
        step.end_of_run = false;
        held.remove_if([](const Held& h) { return h.unfinished == 0; });
        inbox->publish(gauges(scheduler, last));  // what it admitted now runs, no longer waits
        nothing_to_run = step.empty();
        if (nothing_to_run && seconds_since_start() - last_step < kHeartbeatSeconds) {
          control_.keep_alive();  // the workers wait in the broadcast: answer their pings
          continue;
        }
      }
      inbox->step_begins();
    }
    const bool more = run_step(scheduler, step, last);
    if (coordinator) {
      inbox->step_ends();
      last_step = seconds_since_start();
    }
    if (!more) break;
  }
  end_run();
}

}  // namespace kvshrink::engine
