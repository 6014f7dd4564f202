#include "engine/serving/throughput_summary.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvshrink::engine {

double percentile(std::span<const double> values, double p) {
  if (values.empty()) return 0.0;
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  const double at = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(at));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (sorted[above] - sorted[below]) * (at - static_cast<double>(below));
}

ThroughputSummary summarize(std::span<const RequestResult> results, const RunStats& run) {
  ThroughputSummary s;
  std::vector<double> ttft, tpot;
  double share_sum = 0.0;
  int64_t compressed = 0;
  double last_first_token = 0.0, last_finish = 0.0;
  int64_t decode_tokens = 0;
  for (const auto& r : results) {
    ++s.requests;
    if (r.finish == FinishReason::kError) {
      ++s.failed;
      continue;
    }
    const auto n = static_cast<int64_t>(r.tokens.size());
    s.input_tokens += r.prompt_tokens;
    s.output_tokens += n;
    s.preemptions += r.preemptions;
    ttft.push_back(r.first_token_seconds - r.arrival_seconds);
    last_first_token = std::max(last_first_token, r.first_token_seconds);
    last_finish = std::max(last_finish, r.finish_seconds);
    decode_tokens += n > 0 ? n - 1 : 0;
    if (n > 1) tpot.push_back((r.finish_seconds - r.first_token_seconds) / static_cast<double>(n - 1));
    if (r.kv_bytes_full_compressed > 0) {
      share_sum +=
          static_cast<double>(r.kv_bytes_compressed) / static_cast<double>(r.kv_bytes_full_compressed);
      ++compressed;
    }
  }
  s.seconds = run.seconds;
  if (s.seconds > 0) {
    s.requests_per_second = static_cast<double>(s.requests - s.failed) / s.seconds;
    s.output_tokens_per_second = static_cast<double>(s.output_tokens) / s.seconds;
    s.total_tokens_per_second = static_cast<double>(s.input_tokens + s.output_tokens) / s.seconds;
  }
  if (last_finish > last_first_token) {
    s.decode_tokens_per_second = static_cast<double>(decode_tokens) / (last_finish - last_first_token);
  }
  s.mean_running = run.mean_running;
  s.peak_running = run.peak_running;
  s.pool_peak_bytes = run.pool_peak_bytes;
  s.pool_capacity_bytes = run.pool_capacity_bytes;
  s.ttft_p50 = percentile(ttft, 50);
  s.ttft_p99 = percentile(ttft, 99);
  s.tpot_p50 = percentile(tpot, 50);
  s.tpot_p99 = percentile(tpot, 99);
  s.kv_share = compressed > 0 ? share_sum / static_cast<double>(compressed) : 1.0;
  return s;
}

}  // namespace kvshrink::engine
