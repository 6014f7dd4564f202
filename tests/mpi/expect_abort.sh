#!/usr/bin/env bash
# Usage: expect_abort.sh MESSAGE COMMAND...
# Passes if COMMAND ends within 50 s with a non-zero exit code and its output holds the line
# "kvshrink: error: MESSAGE" exactly once.
set -u
message="kvshrink: error: $1"
shift
output=$(timeout --kill-after=5 50 "$@" 2>&1)
status=$?
printf '%s\n' "$output"
if [ "$status" -eq 0 ]; then
  echo "expect_abort: the command exited 0, expected a non-zero exit code" >&2
  exit 1
fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "expect_abort: the command did not end within 50 s" >&2
  exit 1
fi
count=$(printf '%s\n' "$output" | grep -cxF -- "$message")
if [ "$count" -ne 1 ]; then
  echo "expect_abort: '$message' appeared $count times, expected once" >&2
  exit 1
fi
echo "expect_abort: exit code $status, message printed once"
