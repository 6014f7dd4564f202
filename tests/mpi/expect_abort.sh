#!/usr/bin/env bash
# Usage: [EXPECT_ABORT_WITHIN=SECONDS] expect_abort.sh MESSAGE COMMAND...
# Passes if COMMAND ends within SECONDS (default 50) with a non-zero exit code and its output holds
# the line "kvshrink: error: MESSAGE" exactly once. MESSAGE "-" checks no message (a rank that
# dies is reported by mpirun itself).
set -u
within=${EXPECT_ABORT_WITHIN:-50}
message="kvshrink: error: $1"
shift
start=$(date +%s.%N)
output=$(timeout --kill-after=5 "$within" "$@" 2>&1)
status=$?
seconds=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f", end - start }')
printf '%s\n' "$output"
if [ "$status" -eq 0 ]; then
  echo "expect_abort: the command exited 0, expected a non-zero exit code" >&2
  exit 1
fi
# mpirun itself exits 137 when a rank was SIGKILLed: only the clock tells a timeout apart.
if [ "$status" -eq 124 ] || awk -v s="$seconds" -v w="$within" 'BEGIN { exit !(s >= w) }'; then
  echo "expect_abort: the command did not end within $within s" >&2
  exit 1
fi
if [ "$message" != "kvshrink: error: -" ]; then
  count=$(printf '%s\n' "$output" | grep -cxF -- "$message")
  if [ "$count" -ne 1 ]; then
    echo "expect_abort: '$message' appeared $count times, expected once" >&2
    exit 1
  fi
fi
echo "expect_abort: exit code $status after $seconds s"
