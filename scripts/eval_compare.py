#!/usr/bin/env python3
"""Two `kvshrink eval` output folders on the same prompts (e.g. --kv-dtype f32 and f16): per setting,
the mean score of each, how many prompts they share, on how many the two scores are equal and the
predictions identical, and the mean KV held (% of the full KV each run counted: f32 bytes before issue 13, 16-bit since).

Usage: python3 scripts/eval_compare.py A_DIR B_DIR   (prints markdown; settings present in both)
"""
import collections
import json
import pathlib
import sys


def load(folder):
    records = {}
    for line in open(pathlib.Path(folder) / "samples.jsonl"):
        if line.strip():
            r = json.loads(line)
            records[(r["setting"], r["mode"], r["sample_id"])] = r
    return records


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    shared = collections.defaultdict(list)  # (mode, setting) -> [(record a, record b)]
    for key in a.keys() & b.keys():
        shared[(key[1], key[0])].append((a[key], b[key]))
    print(f"A = {sys.argv[1]}, B = {sys.argv[2]}\n")
    print("| mode | setting | prompts | A mean | B mean | equal scores | identical predictions | KV held A / B |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (mode, setting), pairs in sorted(shared.items()):
        n = len(pairs)
        mean_a = 100 * sum(p[0]["score"] for p in pairs) / n
        mean_b = 100 * sum(p[1]["score"] for p in pairs) / n
        equal = sum(p[0]["score"] == p[1]["score"] for p in pairs)
        identical = sum(p[0]["prediction"] == p[1]["prediction"] for p in pairs)
        held_a = 100 * sum(p[0]["kv_bytes_held"] / p[0]["kv_bytes_full"] for p in pairs) / n
        held_b = 100 * sum(p[1]["kv_bytes_held"] / p[1]["kv_bytes_full"] for p in pairs) / n
        print(f"| {mode} | {setting} | {n} | {mean_a:.1f} | {mean_b:.1f} | {equal} | {identical} | "
              f"{held_a:.1f} % / {held_b:.1f} % |")


if __name__ == "__main__":
    main()
