// Process-level CPU setup done once at start: which OpenBLAS kernels load, and how many compute
// threads each rank runs.
#pragma once

#include "comm/world.h"

namespace kvshrink::launch {

// Call first in main, before MPI is initialised. OpenBLAS does not recognise some AVX-512 CPUs
// (AMD Zen 4/5) and falls back to its AVX2 kernels at about half the speed. It reads
// OPENBLAS_CORETYPE in a load-time constructor, so setting it in main is too late: if the CPU has
// AVX-512F and the variable is unset, set OPENBLAS_CORETYPE=SkylakeX and re-execute this
// program (/proc/self/exe) with the same arguments. The variable being set stops a second
// re-exec; a user's own value is kept. If exec fails, the program goes on unchanged.
void reexec_with_openblas_coretype(int argc, char** argv);

// Unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set, gives OpenBLAS (the only thread pool)
// max(1, hardware threads / ranks on this node) threads, and no more than the CPUs this process
// may run on (mpirun binds each of 1-2 ranks to one core by default; `--bind-to none` lifts it).
void set_compute_threads(const comm::World& world);

// Threads this rank computes with (OpenBLAS's pool).
int compute_threads();

}  // namespace kvshrink::launch
