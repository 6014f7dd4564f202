#!/usr/bin/env bash
# Many sequences at once (issue 10): kvshrink bench-throughput under one KV cap that holds CAP_SEQS
# full-KV sequences, full KV beside presses at 6 %; then aggregate decode of 1/4/8/16 full-KV
# sequences beside llama.cpp's llama-batched-bench at the same lengths and thread count, in one
# run (the dev VM is noisy: compare only figures measured together). Markdown on stdout.
#
# Needs build/kvshrink (scripts/build.sh), the side files of mixeddimkv-h next to the model
# (kvshrink calibrate, kvshrink profile-heads) and llama-batched-bench from
# scripts/build_llama_cpp_peers.sh (LLAMA_CPP_DIR, default scratch/llama.cpp; skipped if missing).
#
# env: MODEL, INPUT_LEN=1024, OUTPUT_LEN=128, NUM_PROMPTS=32, THREADS=2, PRESSES, BUDGET,
#   CAP_SEQS=4 and CAP_LEN=INPUT_LEN: the cap holds CAP_SEQS full-KV sequences of CAP_LEN positions
#   (issue 10: of the input length, so full KV preempts as its outputs grow),
#   COMPRESS_EVERY (re-compact every N decode steps; unset: each method's default), ACTIVATIONS=f32|q8,
#   PARTS=cap,aggregate (which of the two parts to run)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-models/smollm2-135m-instruct.gguf}"
KVSHRINK="${KVSHRINK:-build/kvshrink}"
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-scratch/llama.cpp}"
INPUT_LEN="${INPUT_LEN:-1024}"
OUTPUT_LEN="${OUTPUT_LEN:-128}"
NUM_PROMPTS="${NUM_PROMPTS:-32}"
CAP_SEQS="${CAP_SEQS:-4}"
CAP_LEN="${CAP_LEN:-$INPUT_LEN}"
COMPRESS_EVERY="${COMPRESS_EVERY:-}"
compress_every=()
[ -n "$COMPRESS_EVERY" ] && compress_every=(--compress-every "$COMPRESS_EVERY")
ACTIVATIONS="${ACTIVATIONS:-f32}"
THREADS="${THREADS:-2}"
PRESSES="${PRESSES:-snapkv,adakv,mixeddimkv-h}"
BUDGET="${BUDGET:-0.06}"
PARTS="${PARTS:-cap,aggregate}"

load() { cut -d' ' -f1-3 /proc/loadavg; }
# KV blocks of one full-KV sequence: n_layers x n_kv_heads heads, 16 tokens a block, 8320 bytes a
# block at head_dim 64 (SmolLM2: 30 layers x 3 kv heads).
blocks_per_head=$(( (CAP_LEN + 15) / 16 ))
cap_bytes=$(( CAP_SEQS * 30 * 3 * blocks_per_head * 8320 ))
echo "# bench-throughput, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cpus,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo
if [[ ",$PARTS," == *,cap,* ]]; then
  echo "## $NUM_PROMPTS requests of $INPUT_LEN + $OUTPUT_LEN tokens, KV cap $cap_bytes bytes = $CAP_SEQS full-KV sequences of $CAP_LEN positions, $ACTIVATIONS activations, compress every ${COMPRESS_EVERY:-default}, 1 process x $THREADS threads (load $(load))"
  echo
  OPENBLAS_NUM_THREADS="$THREADS" "$KVSHRINK" bench-throughput -m "$MODEL" --input-len "$INPUT_LEN" \
    --output-len "$OUTPUT_LEN" --num-prompts "$NUM_PROMPTS" --kv-memory "$cap_bytes" \
    --press "$PRESSES" --budget "$BUDGET" "${compress_every[@]}" --matmul-activations "$ACTIVATIONS" -o md
  echo
fi
if [[ ",$PARTS," != *,aggregate,* ]]; then exit 0; fi
echo "## aggregate decode at full KV, $INPUT_LEN + $OUTPUT_LEN tokens, N sequences at once (load $(load))"
echo
for n in 1 4 8 16; do
  echo "### N = $n"
  OPENBLAS_NUM_THREADS="$THREADS" "$KVSHRINK" bench-throughput -m "$MODEL" --input-len "$INPUT_LEN" \
    --output-len "$OUTPUT_LEN" --num-prompts "$n" --max-num-seqs "$n" -o md 2>/dev/null | tail -n 1
done
BATCHED_BENCH="$LLAMA_CPP_DIR/build/bin/llama-batched-bench"
if [ -x "$BATCHED_BENCH" ]; then
  echo
  # Where CPUID reports AMX, ggml's AMX kernels (its repacked weights) fault on the dev VM: -nr.
  repack=(); repack_note="repacked weights allowed"
  if grep -qw amx_tile /proc/cpuinfo; then repack=(-nr); repack_note="no repack (AMX kernels fault on the dev VM)"; fi
  echo "## llama-batched-bench, $THREADS threads, $repack_note (load $(load))"
  echo
  "$BATCHED_BENCH" -m "$MODEL" -c $(( 16 * (INPUT_LEN + OUTPUT_LEN) + 64 )) -npp "$INPUT_LEN" -ntg "$OUTPUT_LEN" \
    -npl 1,4,8,16 -pps -np 16 -kvu -t "$THREADS" -tb "$THREADS" -fa off "${repack[@]}" 2>/dev/null | grep -E '^\|'
else
  echo "(llama-batched-bench not found at $BATCHED_BENCH: run scripts/build_llama_cpp_peers.sh)"
fi
