#!/usr/bin/env bash
# A 40-setting eval on the engine (every press x budget a fork of one prefill, decoded together)
# against an older kvshrink binary that ran the settings one after another; same flags, then a
# record-by-record comparison. Usage:
#   OLD_BIN=/path/to/old/kvshrink scripts/eval_speed_check.sh [out-dir]
# MODEL (default models/smollm2-135m-instruct.gguf) and NEW_BIN (default build/kvshrink) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD_BIN:?set OLD_BIN to the kvshrink binary to compare against}"
OUT=${1:-out/eval_speed_check}
MODEL=${MODEL:-models/smollm2-135m-instruct.gguf}
NEW_BIN=${NEW_BIN:-build/kvshrink}
ARGS=(-m "$MODEL" --task passkey,niah_single_1 --context-lengths 1024 --depths 50 --samples 2
      --mode query-aware --press snapkv,pyramidkv,adakv,h2o,streamingllm
      --budget 0.75,0.5,0.4,0.3,0.25,0.125,0.08,0.06)
rm -rf "$OUT/new" "$OUT/old"
mkdir -p "$OUT"
for side in new old; do
  bin=$NEW_BIN
  [ "$side" = old ] && bin=$OLD_BIN
  start=$(date +%s.%N)
  "$bin" eval "${ARGS[@]}" --out "$OUT/$side" >"$OUT/$side.log" 2>&1
  echo "$side: $(echo "$(date +%s.%N) - $start" | bc) s"
done
python3 - "$OUT" <<'PY'
import json, sys
def load(path):
    return {(r["sample_id"], r["mode"], r["setting"]): r for r in map(json.loads, open(path))}
new, old = (load(f"{sys.argv[1]}/{side}/samples.jsonl") for side in ("new", "old"))
differ = [k for k in new if k not in old or new[k] != old[k]]
print(f"records: {len(new)} new, {len(old)} old, {len(differ)} differ")
sys.exit(1 if differ or new.keys() != old.keys() else 0)
PY
