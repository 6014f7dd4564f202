#!/usr/bin/env bash
# One task of a kvshrink batch array job (batch-array.sbatch runs it; it also runs outside Slurm
# with the SLURM_ARRAY_* variables set by hand). It takes its shard of INPUT (shard-jsonl.sh: line
# i goes to task i mod COUNT), runs `kvshrink batch` on it with its own results file, and makes the
# task requeue-safe:
#
#   - shard and results files are named by INDEX and COUNT under OUT_DIR, so a requeued task finds
#     its own results again and `kvshrink batch` skips the custom_ids already there;
#   - SIGTERM or SIGINT to this script (sbatch --signal=B:TERM@120 before the time limit; Slurm's
#     preemption) goes on to the ranks: srun forwards it to every task; mpirun gets SIGUSR1, which it
#     forwards to every rank unchanged (a SIGTERM it would follow with SIGKILL 1 s later); rank 0 of
#     kvshrink batch finishes the step, flushes and exits 75, the other ranks follow it;
#   - on 75 the task asks Slurm to requeue it (scontrol requeue), at most MAX_REQUEUES times, and
#     exits 75; run again by hand (or `sbatch --array=K`) it resumes the same way.
#
# Usage: batch-task.sh [-- EXTRA kvshrink batch FLAGS...]
# Environment:
#   INPUT        requests JSONL (required)
#   OUT_DIR      where shard-K-of-N.jsonl and results-K-of-N.jsonl go (default: kvshrink-batch-out)
#   MODEL        GGUF model (required)
#   KVSHRINK     the executable (default: kvshrink on PATH)
#   LAUNCHER     srun | mpirun | none (default: srun inside a Slurm job, none outside)
#   TP           ranks per task, one per GPU (default: SLURM_NTASKS, else 1)
#   MAX_REQUEUES most self-requeues (default 20; SLURM_RESTART_COUNT counts them)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "batch-task[${SLURM_ARRAY_TASK_ID:-?}]: $*" >&2; }

[ "${1:-}" = "--" ] && shift
: "${INPUT:?set INPUT to the requests JSONL}"
: "${MODEL:?set MODEL to the GGUF model}"
OUT_DIR=${OUT_DIR:-kvshrink-batch-out}
KVSHRINK=${KVSHRINK:-kvshrink}
TP=${TP:-${SLURM_NTASKS:-1}}
MAX_REQUEUES=${MAX_REQUEUES:-20}
if [ -z "${LAUNCHER:-}" ]; then
  if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun > /dev/null; then LAUNCHER=srun; else LAUNCHER=none; fi
fi

# This task's place in the array (the same checks as shard-jsonl.sh).
: "${SLURM_ARRAY_TASK_ID:?not an array task: set SLURM_ARRAY_TASK_ID, _MIN, _MAX and _COUNT}"
count=${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT is not set}
index=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
mkdir -p "$OUT_DIR"
shard="$OUT_DIR/shard-$index-of-$count.jsonl"
results="$OUT_DIR/results-$index-of-$count.jsonl"

# The same shard on every run: written whole, then renamed into place.
"$here/shard-jsonl.sh" "$INPUT" > "$shard.tmp.$$"
mv -f "$shard.tmp.$$" "$shard"
lines=$(grep -c '[^[:space:]]' "$shard" || true)
if [ "$lines" -eq 0 ]; then
  log "shard $index of $count is empty (fewer requests than tasks)"
  : >> "$results"
  exit 0
fi

case "$LAUNCHER" in
  srun) launch=(srun --mpi=pmix --ntasks="$TP" --kill-on-bad-exit=1) ;;
  mpirun) launch=(mpirun -np "$TP" --map-by "ppr:$TP:node" --bind-to none) ;;
  none) launch=() ;;
  *) log "LAUNCHER must be srun, mpirun or none, not '$LAUNCHER'"; exit 2 ;;
esac

# Runs "$@" in the background and forwards SIGTERM/SIGINT as described above; returns its status.
child=0
forwarded=0
forward_signal() {
  forwarded=1
  [ "$child" -gt 0 ] || return 0  # not started yet: run_forwarding_signals forwards it at once
  log "got a stop signal: forwarding it; kvshrink batch flushes and exits 75"
  if [ "$LAUNCHER" = mpirun ]; then
    kill -USR1 "$child" 2> /dev/null || true
  else
    kill -TERM "$child" 2> /dev/null || true
  fi
}
run_forwarding_signals() {
  trap forward_signal TERM INT
  "$@" &
  child=$!
  [ "$forwarded" = 0 ] || forward_signal
  local rc
  while :; do
    forwarded=0
    rc=0
    wait "$child" || rc=$?
    [ "$forwarded" = 1 ] || break  # else wait returned for the signal: wait for the exit itself
  done
  trap - TERM INT
  return "$rc"
}

log "shard $index of $count: $lines requests -> $results (launcher: $LAUNCHER, $TP ranks)"
rc=0
run_forwarding_signals "${launch[@]}" "$KVSHRINK" batch --model "$MODEL" -i "$shard" -o "$results" "$@" || rc=$?

case "$rc" in
  0) log "shard $index of $count done"; exit 0 ;;
  75)
    restarts=${SLURM_RESTART_COUNT:-0}
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "$restarts" -lt "$MAX_REQUEUES" ]; then
      log "stopped before the end; requeueing (restart $((restarts + 1)) of at most $MAX_REQUEUES)"
      scontrol requeue "$SLURM_JOB_ID" || log "scontrol requeue failed; resubmit this task to resume"
    else
      log "stopped before the end; run the same task again to resume"
    fi
    exit 75
    ;;
  *) log "kvshrink batch failed with exit code $rc"; exit "$rc" ;;
esac
