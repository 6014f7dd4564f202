#!/usr/bin/env bash
# Speed reference: llama.cpp's llama-bench on the same GGUF kvshrink uses.
#
# llama-bench is NOT part of this repo. Fetch + build it into a scratch folder
# (never committed) from the llama.cpp vendored in the llama-cpp-python sdist:
#
#   S=/work/scratch/llama-bench
#   mkdir -p $S && cd $S
#   pip download --no-binary :all: --no-deps -d $S llama-cpp-python==0.3.36
#   tar xzf llama_cpp_python-0.3.36.tar.gz
#   cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B build \
#         -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
#         -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
#         -DLLAMA_BUILD_APP=OFF
#   cmake --build build --target llama-bench -j2
#   # -> $S/build/bin/llama-bench  (vendored llama.cpp commit 0c1e570, ggml 0.25.3)
#
# Usage:
#   scripts/bench_llama_cpp.sh [MODEL.gguf]
#   env: LLAMA_BENCH=/path/to/llama-bench   (default below)
#        REPS=3   DEPTH=4096 (set DEPTH= to skip the depth run)   THREADS="2 1"
#        FA=0     flash attention for llama-bench's -fa (0, 1, or "0,1" for both). This
#                 llama.cpp defaults to "auto", which turns FA ON on the CPU and is much slower
#                 here (tg128 @ d4096, 2 threads: 44 t/s with -fa 0 vs 23-29 t/s with auto/1).
#                 perf-anchors.md's table is without FA, so 0 is the default.
#
# The dev machine has 2 vCPUs and is noisy (5-15% run to run): compare programs measured in
# the same session, and look at the load average printed before each run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="${1:-$HERE/../models/smollm2-135m-instruct.gguf}"
LLAMA_BENCH="${LLAMA_BENCH:-/work/scratch/llama-bench/build/bin/llama-bench}"
REPS="${REPS:-3}"
DEPTH="${DEPTH-4096}"
THREADS="${THREADS:-2 1}"
FA="${FA:-0}"

if [[ ! -x "$LLAMA_BENCH" ]]; then
    echo "llama-bench not found at $LLAMA_BENCH (see build commands at the top of $0)" >&2
    exit 1
fi
if [[ ! -f "$MODEL" ]]; then
    echo "model not found: $MODEL" >&2
    exit 1
fi

echo "# llama-bench: $LLAMA_BENCH"
echo "# model: $MODEL"
echo "# flash attention: -fa $FA"
echo "# host: $(hostname), $(nproc) cpus, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# Does this llama-bench know -d/--n-depth?
HAVE_DEPTH=0
if "$LLAMA_BENCH" --help 2>&1 | grep -q -- '--n-depth'; then HAVE_DEPTH=1; fi

for t in $THREADS; do
    echo
    echo "## threads=$t   (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    "$LLAMA_BENCH" -m "$MODEL" -t "$t" -p 512,2048 -n 128 -fa "$FA" -r "$REPS" -o md
    if [[ -n "$DEPTH" && $HAVE_DEPTH == 1 ]]; then
        echo
        echo "### threads=$t, tg128 at depth $DEPTH   (load: $(cut -d' ' -f1-3 /proc/loadavg))"
        echo
        "$LLAMA_BENCH" -m "$MODEL" -t "$t" -p 0 -n 128 -d "$DEPTH" -fa "$FA" -r "$REPS" -o md
    fi
done
