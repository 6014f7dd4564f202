#!/usr/bin/env bash
# Submits batch-array.sbatch over SHARDS tasks and merge.sbatch after it (afterok), and prints both
# job ids. Run from the repository root (sbatch remembers it as SLURM_SUBMIT_DIR).
#
#   INPUT=requests.jsonl MODEL=m.gguf [OUT_DIR=out] [SHARDS=8] \
#     examples/slurm/submit-batch.sh RESULTS.jsonl [-- kvshrink batch flags...]
#
# Extra sbatch options (partition, account, GPUs) go in SBATCH_ARGS, e.g. SBATCH_ARGS="-p gpu".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: submit-batch.sh RESULTS.jsonl [-- kvshrink batch flags...]" >&2; exit 2; }
results=$1
shift
[ "${1:-}" = "--" ] && shift
: "${INPUT:?set INPUT}" "${MODEL:?set MODEL}"
SHARDS=${SHARDS:-8}
OUT_DIR=${OUT_DIR:-$PWD/kvshrink-batch-out}
read -r -a extra <<< "${SBATCH_ARGS:-}"
# sbatch's --export does not survive commas in values: the values go through the environment.
export INPUT MODEL OUT_DIR SHARDS RESULTS=$results
array=$(sbatch --parsable --export=ALL "${extra[@]}" --array="0-$((SHARDS - 1))" \
  "$here/batch-array.sbatch" -- "$@")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL "${extra[@]}" --dependency="afterok:$array" "$here/merge.sbatch")
echo "array job $array ($SHARDS shards -> $OUT_DIR), merge job $merge -> $results"
