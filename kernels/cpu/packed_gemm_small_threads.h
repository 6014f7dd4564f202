// The threads of the packed small-m matmul: the calling thread plus openblas_get_num_threads() - 1
// workers, so a rank uses the thread count launch gave OpenBLAS. A decode step makes ~200 matmul
// calls microseconds apart, so between calls a worker spins a short while (kSpinMicros) and then
// parks on a futex: parked, it holds no core while OpenBLAS's own threads run (prefill SGEMM,
// attention), which is what kept a second pool (OpenMP's spinning one) from coexisting with
// OpenBLAS on 2 cores.
#pragma once

#include <cstdint>
#include <type_traits>

namespace kvshrink::kernels::cpu {

// Runs task(ctx, t) for every t in [0, n_tasks) on the compute threads, each t once, and returns
// when all are done. One caller at a time; a second concurrent caller runs its tasks itself.
void run_on_compute_threads(int64_t n_tasks, void (*task)(void* ctx, int64_t t), void* ctx);

// The same for tasks that call OpenBLAS: OpenBLAS is single-threaded while they run (each task
// multiplies on its own thread) and gets its thread count back after. Two threads entering a
// multi-threaded OpenBLAS at once would oversubscribe the cores; one thread entering it for many
// small SGEMMs leaves the other cores spinning in OpenBLAS's sched_yield between them.
void run_blas_tasks_on_compute_threads(int64_t n_tasks, void (*task)(void* ctx, int64_t t), void* ctx);

template <class Task>  // Task: void(int64_t t)
void run_on_compute_threads(int64_t n_tasks, Task&& task) {
  using T = std::remove_reference_t<Task>;
  run_on_compute_threads(
      n_tasks, [](void* ctx, int64_t t) { (*static_cast<T*>(ctx))(t); }, &task);
}

template <class Task>  // Task: void(int64_t t)
void run_blas_tasks_on_compute_threads(int64_t n_tasks, Task&& task) {
  using T = std::remove_reference_t<Task>;
  run_blas_tasks_on_compute_threads(
      n_tasks, [](void* ctx, int64_t t) { (*static_cast<T*>(ctx))(t); }, &task);
}

}  // namespace kvshrink::kernels::cpu
