// What GET /metrics reports, in Prometheus' text format (names after vLLM's, prefixed kvshrink:):
// requests running / waiting (gauges, from the engine) and finished by reason, prompt and
// generation tokens, preemptions, the KV pool's bytes used and capacity, the KV share the live
// sequences hold against full KV, and TTFT / time-per-output-token / end-to-end histograms.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/serving/request.h"
#include "engine/serving/request_inbox.h"

namespace kvshrink::launch {

class ServeMetrics {
 public:
  // Any thread: a request that ran (its result final) or was refused before it ran (status >= 400).
  void count_finished(const engine::RequestResult& result);
  void count_refused(int status);
  std::string render(const engine::ServingGauges& gauges) const;

 private:
  struct Histogram {
    std::vector<double> bounds;    // upper bounds, seconds
    std::vector<uint64_t> counts;  // [bounds.size() + 1], the last +Inf
    double sum = 0.0;
    uint64_t count = 0;
    explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
    void observe(double seconds);
  };
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> finished_;  // finish reason -> requests
  std::map<int, uint64_t> refused_;           // HTTP status -> requests
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram tpot_{{0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1}};
  Histogram e2e_{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};
};

}  // namespace kvshrink::launch
