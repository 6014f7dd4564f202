#!/usr/bin/env bash
# Checks examples/slurm without Slurm: `bash -n` on every script, then the array logic run by hand
# (SLURM_ARRAY_* set here) with tests/scripts/fake-kvshrink standing in for `kvshrink batch` (a stub
# that only writes one result line per request; no model runs): every request lands in exactly one
# shard, a task stopped by exit 75 or by SIGTERM resumes without repeating a request, and the merge
# puts one result per custom_id in input order and refuses missing, repeated or torn results.
#
#   tests/scripts/slurm_scripts_test.sh [REPO_ROOT]
set -euo pipefail

root=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)
examples="$root/examples/slurm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset SLURM_JOB_ID SLURM_RESTART_COUNT SLURM_NTASKS
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else fail "$what"; fi
}

# 1. Syntax of every script.
for script in "$examples"/*.sh "$examples"/*.sbatch; do
  check "bash -n $(basename "$script")" bash -n "$script"
done
check "merge-results.py compiles" python3 -c "import ast, sys; ast.parse(open(sys.argv[1]).read())" \
  "$examples/merge-results.py"

# 2. An input of 23 requests, a blank line among them and no newline at the end.
input="$work/requests.jsonl"
for i in $(seq 1 23); do
  printf '{"custom_id": "req-%02d", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p%d"}}\n' "$i" "$i"
  [ "$i" -eq 10 ] && echo "   "
done > "$input"
truncate -s -1 "$input"
ids() { python3 -c 'import json, sys; [print(json.loads(l)["custom_id"]) for l in open(sys.argv[1]) if l.strip()]' "$1"; }
ids "$input" > "$work/input-ids"

# 3. Shards from SLURM_ARRAY_* (ids 1..4 as with --array=1-4): disjoint, together the input,
#    line i in shard i mod 4, the same on a second run.
: > "$work/all-shards"
for id in 1 2 3 4; do
  SLURM_ARRAY_TASK_ID=$id SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=4 SLURM_ARRAY_TASK_COUNT=4 \
    "$examples/shard-jsonl.sh" "$input" > "$work/shard-$id"
  ids "$work/shard-$id" >> "$work/all-shards"
done
check "shards cover the input exactly once" cmp -s <(sort "$work/input-ids") <(sort "$work/all-shards")
check "line i goes to shard i mod 4" cmp -s <(ids "$work/shard-2") <(sed -n '2~4p' "$work/input-ids")
check "shard sizes 6 6 6 5" test "$(wc -l < "$work/shard-1")$(wc -l < "$work/shard-4")" = "65"
check "sharding is deterministic" cmp -s "$work/shard-3" <("$examples/shard-jsonl.sh" "$input" 2 4)
check "a non-contiguous array is refused" bash -c '! SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_MIN=0 \
  SLURM_ARRAY_TASK_MAX=6 SLURM_ARRAY_TASK_COUNT=4 "$1" "$2" > /dev/null 2>&1' _ "$examples/shard-jsonl.sh" "$input"

# 4. The array's tasks (--array=0-3) with the stub: task 2 stops after 2 results (exit 75) and is
#    run again; task 1 gets SIGTERM mid-run through batch-task.sh and is run again.
export INPUT="$input" MODEL=fake.gguf OUT_DIR="$work/out" KVSHRINK="$root/tests/scripts/fake-kvshrink"
export LAUNCHER=none SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=3 SLURM_ARRAY_TASK_COUNT=4
task() { SLURM_ARRAY_TASK_ID=$1 "$examples/batch-task.sh" -- --press snapkv 2> "$work/task-$1.log"; }
rc=0; task 0 || rc=$?; check "task 0 completes" test "$rc" -eq 0
rc=0; task 3 || rc=$?; check "task 3 completes" test "$rc" -eq 0
rc=0; FAKE_KVSHRINK_STOP_AFTER=2 task 2 || rc=$?
check "task 2 stopped early exits 75" test "$rc" -eq 75
check "task 2 kept its 2 results" test "$(wc -l < "$OUT_DIR/results-2-of-4.jsonl")" -eq 2
rc=0; task 2 || rc=$?; check "task 2 resumed completes" test "$rc" -eq 0
FAKE_KVSHRINK_DELAY=0.3 SLURM_ARRAY_TASK_ID=1 "$examples/batch-task.sh" 2> "$work/task-1.log" &
pid=$!
for _ in $(seq 100); do  # until the stub has written its first result (at most 10 s)
  [ -s "$OUT_DIR/results-1-of-4.jsonl" ] && break
  sleep 0.1
done
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
check "SIGTERM to task 1 is forwarded: exit 75" test "$rc" -eq 75
partial=$(wc -l < "$OUT_DIR/results-1-of-4.jsonl")
check "task 1 flushed part of its shard ($partial of 6)" test "$partial" -ge 1 -a "$partial" -lt 6
rc=0; task 1 || rc=$?; check "task 1 resumed completes" test "$rc" -eq 0
for k in 0 1 2 3; do
  check "shard $k: one result per request" cmp -s <(ids "$OUT_DIR/shard-$k-of-4.jsonl") \
    <(ids "$OUT_DIR/results-$k-of-4.jsonl")
done

# 5. The merge: every custom_id once, in input order; shard files given in any order.
results=("$OUT_DIR"/results-{3,1,0,2}-of-4.jsonl)
check "merge succeeds" python3 "$examples/merge-results.py" "$input" "$work/merged.jsonl" "${results[@]}"
check "merged results in input order" cmp -s "$work/input-ids" <(ids "$work/merged.jsonl")
check "merge.sbatch runs the same merge" env INPUT="$input" SHARDS=4 RESULTS="$work/merged2.jsonl" \
  KVSHRINK_EXAMPLES="$examples" bash "$examples/merge.sbatch"
check "merge.sbatch output equals merge-results.py's" cmp -s "$work/merged.jsonl" "$work/merged2.jsonl"

# 6. The merge refuses, and writes nothing, when a result is missing, repeated or torn.
refuses() {  # refuses WHAT EXPECTED_MESSAGE RESULT_FILES...
  local what=$1 message=$2
  shift 2
  rm -f "$work/bad.jsonl"
  if python3 "$examples/merge-results.py" "$input" "$work/bad.jsonl" "$@" 2> "$work/merge.err"; then
    fail "merge accepted $what"
  elif ! grep -q "$message" "$work/merge.err" || [ -e "$work/bad.jsonl" ]; then
    fail "merge of $what: expected '$message' and no output; got: $(cat "$work/merge.err")"
  else
    echo "ok: merge refuses $what"
  fi
}
others=("$OUT_DIR"/results-{1,2,3}-of-4.jsonl)  # all but shard 0
head -n 3 "$OUT_DIR/results-0-of-4.jsonl" > "$work/short.jsonl"
refuses "a missing result" "3 of 23 requests have no result" "$work/short.jsonl" "${others[@]}"
refuses "a repeated result" "second result for 'req-01'" "${results[@]}" "$work/short.jsonl"
cp "$OUT_DIR/results-0-of-4.jsonl" "$work/torn.jsonl"
printf '{"id": "batch_req_x", "custom_' >> "$work/torn.jsonl"
refuses "a torn last line" "torn last line" "$work/torn.jsonl" "${others[@]}"
echo '{"custom_id": "not-asked"}' > "$work/stranger.jsonl"
refuses "an unknown custom_id" "'not-asked' is not in the input" "${results[@]}" "$work/stranger.jsonl"

# 7. More tasks than requests: the empty shards finish at once with an empty results file.
rc=0
SLURM_ARRAY_TASK_ID=29 SLURM_ARRAY_TASK_MAX=29 SLURM_ARRAY_TASK_COUNT=30 "$examples/batch-task.sh" \
  2> "$work/task-29.log" || rc=$?
check "an empty shard succeeds" test "$rc" -eq 0 -a -f "$OUT_DIR/results-29-of-30.jsonl" \
  -a ! -s "$OUT_DIR/results-29-of-30.jsonl"

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all slurm script checks passed"
