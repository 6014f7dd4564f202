#!/usr/bin/env python3
"""Press x budget pivot of a `kvshrink eval` output folder: for each (mode, context length), one row
per press and one column per budget, cells = mean score over the tasks the model does at full KV
(full-KV mean >= 5 %, as in results.md), with "% of full" in brackets.

Usage: python3 scripts/eval_pivot.py OUT_DIR   (prints markdown)
"""
import collections
import json
import pathlib
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    records = [json.loads(line) for line in open(pathlib.Path(sys.argv[1]) / "samples.jsonl") if line.strip()]
    full_by_task = collections.defaultdict(list)
    for r in records:
        if r["press"] == "none":
            full_by_task[r["task"]].append(r["score"])
    tasks = sorted(t for t, s in full_by_task.items() if sum(s) / len(s) >= 0.05)
    cells = collections.defaultdict(list)  # (mode, length, press, budget) -> scores
    for r in records:
        if r["task"] in tasks:
            cells[(r["mode"], r["context_length"], r["press"], r["budget_fraction"])].append(r["score"])
    print(f"Tasks averaged: {', '.join(tasks)}.\n")
    for mode, length in sorted({(k[0], k[1]) for k in cells}):
        full = cells[(mode, length, "none", 0.0)]
        full_mean = 100 * sum(full) / len(full)
        budgets = sorted({k[3] for k in cells if k[0] == mode and k[1] == length and k[2] != "none"}, reverse=True)
        presses = sorted({k[2] for k in cells if k[0] == mode and k[1] == length and k[2] != "none"})
        n = len(full)
        print(f"**{mode}, {length} tokens** ({n} samples per cell; full KV {full_mean:.1f})\n")
        print("| press | " + " | ".join(f"{100 * b:g}%" for b in budgets) + " |")
        print("|---|" + "---:|" * len(budgets))
        for press in presses:
            row = []
            for b in budgets:
                s = cells[(mode, length, press, b)]
                mean = 100 * sum(s) / len(s) if s else float("nan")
                share = f" ({100 * mean / full_mean:.0f}%)" if full_mean > 0 else ""
                row.append(f"{mean:.1f}{share}")
            print(f"| {press} | " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
