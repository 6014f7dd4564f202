#!/usr/bin/env bash
# The device check of the CUDA backend (issue 11), one prepared run for a lent GPU machine:
#   scripts/gpu_check.sh LOG_DIR
# Builds for sm_90 with every core (build-gpu/), runs the CUDA tests (CTest label "cuda": every
# kernel against the CPU backend, the NCCL data plane, the default model's greedy text on cuda vs
# cpu at np 1 and 2) and a short benchmark (8K prefill, decode at depth 0 and 8000, cpu vs cuda,
# full KV and snapkv at 6 %), writing build.log, tests.log, info.log, bench.md and summary.txt to LOG_DIR.
# Meant to end within 8 minutes on a 16-core H200 machine. Without a device it still builds and
# runs: the device tests report themselves skipped and the benchmark says why it did not run.
# Needs the build's dependencies (scripts/setup.sh's packages) and, for the end-to-end test and the
# benchmark, the default model at models/ (or KVSHRINK_MODEL).
set -uo pipefail
log_dir=${1:?usage: scripts/gpu_check.sh LOG_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$log_dir"
model=${KVSHRINK_MODEL:-models/smollm2-135m-instruct.gguf}
summary="$log_dir/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

start=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKVSHRINK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
         -DKVSHRINK_TEST_MODEL="$PWD/$model" &&
       cmake --build build-gpu -j "$(nproc)"; } >"$log_dir/build.log" 2>&1; then
  note "build: FAILED after $(($(date +%s) - start)) s (see build.log)"
  tail -30 "$log_dir/build.log"
  exit 1
fi
note "build: ok in $(($(date +%s) - start)) s"

build-gpu/kvshrink info >"$log_dir/info.log" 2>&1
cat "$log_dir/info.log" >>"$summary"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
start=$(date +%s)
timeout 300 ctest --test-dir build-gpu -L cuda --output-on-failure -j 4 --timeout 240 >"$log_dir/tests.log" 2>&1
tests_rc=$?
note "cuda tests: exit $tests_rc in $(($(date +%s) - start)) s; $(grep -E 'tests passed|tests failed' "$log_dir/tests.log" | tail -1)"
grep -E "Skipped|\\*\\*\\*Failed|Timeout" "$log_dir/tests.log" | head -20 | tee -a "$summary"

bench_rc=0
if ! grep -q "^cuda:[0-9]" "$log_dir/info.log"; then
  note "bench: not run (no CUDA device: $(grep '^cuda' "$log_dir/info.log"))"
elif [[ ! -f $model ]]; then
  note "bench: not run (no model at $model)"
else
  : >"$log_dir/bench.md"
  for device in cuda cpu; do
    for press in none snapkv; do
      budget=(); [[ $press == none ]] || budget=(--press "$press" --budget 0.06)
      echo "## --device $device --press $press: 8K prefill, decode at depth 0 and 8000" >>"$log_dir/bench.md"
      for shape in "-p 8192 -n 64 -d 0" "-p 128 -n 64 -d 8000"; do
        # shellcheck disable=SC2086  # $shape is the flags
        timeout 100 build-gpu/kvshrink bench -m "$model" --device "$device" $shape -r 2 "${budget[@]}" \
          >>"$log_dir/bench.md" 2>&1 || bench_rc=$?
      done
    done
  done
  note "bench: exit $bench_rc (bench.md)"
fi
[[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
