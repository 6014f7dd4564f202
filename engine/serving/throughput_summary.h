// What a throughput run of many requests achieved (kvshrink bench-throughput; after vLLM's
// `bench throughput`): rates over the run's wall time, latency percentiles over requests.
#pragma once

#include <cstdint>
#include <span>

#include "engine/serving/engine.h"
#include "engine/serving/request.h"

namespace kvshrink::engine {

struct ThroughputSummary {
  int64_t requests = 0;
  int64_t failed = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double seconds = 0.0;
  double requests_per_second = 0.0;
  double output_tokens_per_second = 0.0;
  double total_tokens_per_second = 0.0;  // (input + output) / seconds
  // Decode alone: tokens after each request's first, over the time from the last first token to
  // the last finish (meaningful when every request runs at once, as in llama-batched-bench's S_TG).
  double decode_tokens_per_second = 0.0;
  double mean_running = 0.0;
  int64_t peak_running = 0;
  uint64_t pool_peak_bytes = 0;
  uint64_t pool_capacity_bytes = 0;
  int64_t preemptions = 0;
  double ttft_p50 = 0.0, ttft_p99 = 0.0;  // seconds from arrival to the first token
  double tpot_p50 = 0.0, tpot_p99 = 0.0;  // seconds per output token after the first
  double kv_share = 0.0;  // mean over requests: bytes held right after compression / full KV there
};

ThroughputSummary summarize(std::span<const RequestResult> results, const RunStats& run);

// The p-th percentile (0..100) of values, linearly interpolated; 0 when empty.
double percentile(std::span<const double> values, double p);

}  // namespace kvshrink::engine
