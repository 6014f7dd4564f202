#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-batched-bench (the speed references of
# docs/performance.md) from the llama.cpp vendored in the llama-cpp-python sdist, outside git.
#
#   scripts/build_llama_cpp_peers.sh [--dir DIR]
#
# DIR: --dir, else $LLAMA_CPP_DIR, else scratch/llama.cpp under the repo root (gitignored).
# Leaves DIR/build/bin/llama-bench and DIR/build/bin/llama-batched-bench.
# env: LLAMA_CPP_PYTHON_VERSION (0.3.36: llama.cpp commit 0c1e570, ggml 0.25.3), JOBS (2).
# The build runs under `nice -n 10` (about 15 minutes on 2 cores).
#
# GGML_NATIVE compiles ggml's AMX kernels where CPUID reports AMX. On the dev VM it does, but
# tile instructions fault: llama-batched-bench (any batch > 1) dies with SIGILL in
# tinygemm_kernel_amx. Run the peers with --no-repack (llama-bench: --repack 0), which keeps the
# weights out of the AMX buffer type.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${LLAMA_CPP_DIR:-$HERE/../scratch/llama.cpp}"
if [[ "${1:-}" == "--dir" && -n "${2:-}" ]]; then
    DIR="$2"
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--dir DIR]" >&2
    exit 2
fi
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
SDIST="$DIR/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    pip download --no-binary :all: --no-deps -d "$DIR" "llama-cpp-python==$VERSION"
fi
if [[ ! -d "$DIR/llama_cpp_python-$VERSION" ]]; then
    tar xzf "$SDIST" -C "$DIR"
fi
# Flash attention is left to run time (llama-bench -fa 0, llama-batched-bench -fa off).
cmake -S "$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp" -B "$DIR/build" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_HTML=OFF
nice -n 10 cmake --build "$DIR/build" --target llama-bench llama-batched-bench -j "$JOBS"
echo "built: $DIR/build/bin/llama-bench $DIR/build/bin/llama-batched-bench"
