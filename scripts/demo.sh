#!/usr/bin/env bash
# Quick start, part 1: install, build, and run a 2-rank tensor-parallel generation on the default
# model, printing the text and tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
bash scripts/mpirun.sh -np 2 build/kvshrink generate --model models/smollm2-135m-instruct.gguf --chat \
  --max-tokens 64 --prompt "Explain in three sentences why the KV cache limits long-context inference."
