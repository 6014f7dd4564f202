#include "engine/serving/request_inbox.h"

#include <algorithm>

namespace kvshrink::engine {

RequestInbox::Submitted RequestInbox::submit(Request request) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return Submitted::kClosed;
    const auto waiting = static_cast<int64_t>(queued_.size()) + gauges_.waiting;
    if (max_waiting_ > 0 && waiting >= max_waiting_) return Submitted::kFull;
    queued_.push_back(std::move(request));
  }
  arrived_.notify_one();
  return Submitted::kQueued;
}

void RequestInbox::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  arrived_.notify_one();
}

bool RequestInbox::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::vector<Request> RequestInbox::take(std::chrono::milliseconds wait) {
  std::unique_lock lock(mutex_);
  if (queued_.empty() && wait.count() > 0)
    arrived_.wait_for(lock, wait, [&] { return !queued_.empty() || closed_; });
  std::vector<Request> out;
  out.reserve(queued_.size());
  for (auto& request : queued_) out.push_back(std::move(request));
  queued_.clear();
  gauges_.waiting += static_cast<int64_t>(out.size());  // until the next publish counts them
  return out;
}

void RequestInbox::publish(const ServingGauges& gauges) {
  std::lock_guard lock(mutex_);
  gauges_ = gauges;
}

ServingGauges RequestInbox::gauges() const {
  std::lock_guard lock(mutex_);
  ServingGauges out = gauges_;
  out.waiting += static_cast<int64_t>(queued_.size());
  return out;
}

namespace {
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void RequestInbox::step_begins() {
  step_began_ns_ = std::max<int64_t>(1, steady_ns());
}

void RequestInbox::step_ends() {
  step_began_ns_ = 0;
}

double RequestInbox::seconds_in_step() const {
  const int64_t began = step_began_ns_;
  return began == 0 ? 0.0 : static_cast<double>(steady_ns() - began) * 1e-9;
}

}  // namespace kvshrink::engine
