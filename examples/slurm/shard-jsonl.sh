#!/usr/bin/env bash
# Prints one array task's shard of a JSONL file: the non-blank lines whose index i (0-based, blank
# lines not counted) has i mod COUNT == INDEX. Deterministic, so a requeued task computes the same
# shard again; merge-results.py uses the same numbering.
#
#   shard-jsonl.sh INPUT INDEX COUNT > shard.jsonl
#   shard-jsonl.sh INPUT > shard.jsonl    # INDEX and COUNT from the SLURM_ARRAY_* variables
#
# From Slurm: INDEX = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, COUNT = SLURM_ARRAY_TASK_COUNT;
# the array must be contiguous (--array=0-7 or 1-8, not 0-14:2, and no %N step in the ids).
set -euo pipefail

die() {
  echo "shard-jsonl.sh: $*" >&2
  exit 2
}

# Sets INDEX and COUNT from the SLURM_ARRAY_* variables, checking the array is contiguous.
slurm_shard() {
  local id=${SLURM_ARRAY_TASK_ID:?not an array task: set SLURM_ARRAY_TASK_ID or pass INDEX COUNT}
  local min=${SLURM_ARRAY_TASK_MIN:-0}
  local max=${SLURM_ARRAY_TASK_MAX:?SLURM_ARRAY_TASK_MAX is not set}
  COUNT=${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT is not set}
  if [ $((max - min + 1)) -ne "$COUNT" ]; then
    die "array ids $min-$max are not contiguous ($COUNT tasks); use --array=$min-$((min + COUNT - 1))"
  fi
  INDEX=$((id - min))
}

[ $# -eq 1 ] || [ $# -eq 3 ] || die "usage: shard-jsonl.sh INPUT [INDEX COUNT]"
input=$1
[ -r "$input" ] || die "cannot read $input"
if [ $# -eq 3 ]; then
  INDEX=$2
  COUNT=$3
else
  slurm_shard
fi
[[ "$INDEX" =~ ^[0-9]+$ && "$COUNT" =~ ^[0-9]+$ ]] || die "INDEX and COUNT must be integers"
[ "$COUNT" -ge 1 ] && [ "$INDEX" -lt "$COUNT" ] || die "need 0 <= INDEX < COUNT (got $INDEX of $COUNT)"

# A line counts when it holds anything but blanks; the last line may lack its newline.
awk -v index_="$INDEX" -v count="$COUNT" 'NF { if (n++ % count == index_) print }' "$input"
