#include "engine/serving/request_inbox.h"

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

}  // namespace kvshrink::engine
