#include "kernels/cpu/packed_gemm_small_threads.h"

#include <cblas.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvshrink::kernels::cpu {
namespace {

constexpr int64_t kSpinMicros = 50;  // a worker's busy wait for the next call before it parks

void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// A job's tasks are claimed by compare-and-swap on state_, one word that holds the job's number,
// task count and next unclaimed task: a worker that wakes late, or reads task_/ctx_ while the
// next job is being published, fails its claim instead of running a task of the wrong job. The
// caller takes tasks too and waits only for claimed tasks to finish (done_), never for a worker
// that has not woken, so a descheduled worker costs nothing but its share of the work.
class ComputeThreads {
 public:
  static constexpr int kTaskBits = 20;  // state_: job << 40 | task count << 20 | next task
  static constexpr uint64_t kTaskMask = (uint64_t{1} << kTaskBits) - 1;
  static constexpr int64_t kMaxTasks = kTaskMask;

  explicit ComputeThreads(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~ComputeThreads() {
    stop_.store(true);
    wake_.fetch_add(1);
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  void run(int64_t n_tasks, void (*task)(void*, int64_t), void* ctx) {
    task_.store(task, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t job = ++jobs_ & ((uint64_t{1} << (64 - 2 * kTaskBits)) - 1);
    state_.store(job << (2 * kTaskBits) | static_cast<uint64_t>(n_tasks) << kTaskBits,
                 std::memory_order_release);
    wake_.fetch_add(1);  // seq_cst: pairs with a parking worker's parked_ bump
    if (parked_.load() > 0) wake_.notify_all();
    while (claim_and_run()) {
    }
    while (done_.load(std::memory_order_acquire) != n_tasks) cpu_relax();
  }

 private:
  // Runs one unclaimed task of the current job; false when none is left.
  bool claim_and_run() {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t next = s & kTaskMask;
      if (next >= ((s >> kTaskBits) & kTaskMask)) return false;
      const auto task = task_.load(std::memory_order_relaxed);
      void* const ctx = ctx_.load(std::memory_order_relaxed);
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        task(ctx, static_cast<int64_t>(next));
        done_.fetch_add(1, std::memory_order_release);
        return true;
      }
    }
  }

  void work() {
    for (uint32_t seen = 0;; seen = wake_.load(std::memory_order_acquire)) {
      wait_for_wake(seen);
      if (stop_.load()) return;
      while (claim_and_run()) {
      }
    }
  }

  void wait_for_wake(uint32_t seen) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    for (int i = 1;; ++i) {
      if (wake_.load(std::memory_order_acquire) != seen) return;
      cpu_relax();
      if (i % 64 == 0 && std::chrono::steady_clock::now() > until) break;
    }
    parked_.fetch_add(1);  // seq_cst, before wait() re-reads wake_
    wake_.wait(seen);
    parked_.fetch_sub(1);
  }

  std::vector<std::thread> threads_;
  std::atomic<uint32_t> wake_{0};  // bumped once per job; parked workers wait on it
  std::atomic<int> parked_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<void (*)(void*, int64_t)> task_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  uint64_t jobs_ = 0;  // caller only
};

// The caller and openblas_get_num_threads() - 1 workers run the tasks; the pool is rebuilt when
// that count changes. blas_serial: OpenBLAS has one thread while the tasks run, also when they run
// on the caller alone (one task), so a task's SGEMMs give the same bits in any batch (OpenBLAS's
// multi-threaded SGEMM may round otherwise). A nested caller (the lock is held) runs its tasks
// itself under the holder's setting.
void run_tasks(int64_t n_tasks, void (*task)(void* ctx, int64_t t), void* ctx, bool blas_serial) {
  static std::mutex mutex;
  static std::unique_ptr<ComputeThreads> pool;
  const int threads = openblas_get_num_threads();
  const int workers = threads - 1;
  std::unique_lock lock(mutex, std::try_to_lock);
  const bool serial_here = blas_serial && lock.owns_lock() && threads > 1;
  if (serial_here) openblas_set_num_threads(1);
  if (!lock.owns_lock() || workers <= 0 || n_tasks <= 1 || n_tasks > ComputeThreads::kMaxTasks) {
    for (int64_t t = 0; t < n_tasks; ++t) task(ctx, t);
  } else {
    if (!pool || pool->workers() != workers) {
      pool.reset();
      pool = std::make_unique<ComputeThreads>(workers);
    }
    pool->run(n_tasks, task, ctx);
  }
  if (serial_here) openblas_set_num_threads(threads);
}

}  // namespace

void run_on_compute_threads(int64_t n_tasks, void (*task)(void* ctx, int64_t t), void* ctx) {
  run_tasks(n_tasks, task, ctx, /*blas_serial=*/false);
}

void run_blas_tasks_on_compute_threads(int64_t n_tasks, void (*task)(void* ctx, int64_t t), void* ctx) {
  run_tasks(n_tasks, task, ctx, /*blas_serial=*/true);
}

}  // namespace kvshrink::kernels::cpu
