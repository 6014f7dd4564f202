#!/usr/bin/env bash
# kvshrink beside llama.cpp's llama-bench, same GGUF, same machine, same thread count, in one run
# (the dev VM is noisy: compare only figures measured together). Output: markdown on stdout.
#
# Needs build/kvshrink (scripts/build.sh) and llama-bench built as described at the top of
# scripts/bench_llama_cpp.sh (a scratch folder, never committed).
#
# Usage: scripts/bench_vs_llama_cpp.sh [MODEL]   env: LLAMA_BENCH, REPS=3, DEPTH=4096, THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-models/smollm2-135m-instruct.gguf}"
LLAMA_BENCH="${LLAMA_BENCH:-/work/scratch/llama-bench/build/bin/llama-bench}"
KVSHRINK="${KVSHRINK:-build/kvshrink}"
REPS="${REPS:-3}"
DEPTH="${DEPTH:-4096}"
THREADS="${THREADS:-2}"

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "# kvshrink vs llama.cpp, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo
echo "## llama.cpp llama-bench, $THREADS threads, flash attention off (load $(load))"
echo
"$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -fa 0 -p 512,2048 -n 128 -r "$REPS" -o md
"$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -fa 0 -p 0 -n 128 -d "$DEPTH" -r "$REPS" -o md | tail -n +3
echo
echo "## kvshrink, 1 process, $THREADS OpenBLAS threads (load $(load))"
echo
OPENBLAS_NUM_THREADS="$THREADS" "$KVSHRINK" bench -m "$MODEL" -p 512,2048 -n 128 -r "$REPS"
OPENBLAS_NUM_THREADS="$THREADS" "$KVSHRINK" bench -m "$MODEL" -p 1 -n 128 -d "$DEPTH" -r "$REPS" | grep tg
echo
echo "## kvshrink, mpirun -np $THREADS (tensor parallel, 1 thread per rank) (load $(load))"
echo
bash scripts/mpirun.sh -np "$THREADS" "$KVSHRINK" bench -m "$MODEL" -p 512,2048 -n 128 -r "$REPS"
bash scripts/mpirun.sh -np "$THREADS" "$KVSHRINK" bench -m "$MODEL" -p 1 -n 128 -d "$DEPTH" -r "$REPS" | grep tg
