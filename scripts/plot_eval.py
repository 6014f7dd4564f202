#!/usr/bin/env python3
"""Plots from a `kvshrink eval` output folder (samples.jsonl), with matplotlib from Debian's
python3-matplotlib (run with /usr/bin/python3):

- niah_heatmap_<task>_<mode>.png: score by needle depth (rows) and context length (columns), for
  every needle task and mode, as RULER/NIAH heatmaps;
- score_vs_kv_<task>_<mode>.png and score_vs_kv_all_tasks_<mode>_<length>.png: mean score against
  the share of full-KV bytes held after compression, one curve per press across its budgets (full
  KV at 100 %);
- score_vs_length_full_kv.png: full-KV score against context length, one line per task.

Usage: /usr/bin/python3 scripts/plot_eval.py OUT_DIR [OUT_DIR ...]   (PNGs go to the first folder)
       /usr/bin/python3 scripts/plot_eval.py --presses P1,P2,... --name NAME OUT_DIR
           only score_vs_kv_all_tasks_<mode>_<length>_NAME.png, with those presses and full KV
"""
import collections
import json
import pathlib
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_records(folders):
    records = []
    for folder in folders:
        with open(pathlib.Path(folder) / "samples.jsonl") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def niah_heatmaps(records, out):
    cells = collections.defaultdict(list)  # (task, mode) -> (depth, length) -> scores
    for r in records:
        if r["depth"] >= 0 and r.get("press", "none") == "none":
            cells[(r["task"], r["mode"])].append(r)
    for (task, mode), rows in cells.items():
        depths = sorted({r["depth"] for r in rows})
        lengths = sorted({r["context_length"] for r in rows})
        grid = [[0.0] * len(lengths) for _ in depths]
        for i, depth in enumerate(depths):
            for j, length in enumerate(lengths):
                scores = [r["score"] for r in rows if r["depth"] == depth and r["context_length"] == length]
                grid[i][j] = sum(scores) / len(scores) if scores else float("nan")
        fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.5 * len(depths) + 1.5))
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(f"{task}, {mode}")
        fig.colorbar(image, ax=ax, label="score")
        fig.tight_layout()
        fig.savefig(out / f"niah_heatmap_{task.replace('/', '_')}_{mode}.png", dpi=120)
        plt.close(fig)


def kv_share(r):
    """KV bytes held right after compression over full KV (older records: at the end)."""
    held = r.get("kv_bytes_held_compressed", r["kv_bytes_held"])
    full = r.get("kv_bytes_full_compressed", r["kv_bytes_full"])
    return held / full if full else 1.0


def score_vs_kv(records, out, name=""):
    """One plot per task and one averaged over all tasks: a curve per press across its budgets
    (with a name: the all-task plots only, NAME appended to their file names)."""
    # plot name -> press -> [(share, score)]: per task and mode, and over all tasks per mode and length
    points = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in records:
        all_tasks = f"all_tasks_{r['mode']}_{r['context_length']}"
        for task in ((all_tasks + "_" + name,) if name else (f"{r['task']}_{r['mode']}", all_tasks)):
            points[task][r.get("press", "none")].append((kv_share(r), r["score"]))
    for task, presses in points.items():
        if list(presses) == ["none"]:
            continue  # full KV only: nothing to compare
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for press, values in sorted(presses.items()):
            by_share = collections.defaultdict(list)
            for share, score in values:
                by_share[round(share, 3)].append(score)
            xs = sorted(by_share)
            ax.plot([100 * x for x in xs], [sum(by_share[x]) / len(by_share[x]) for x in xs], marker="o",
                    label="full KV" if press == "none" else press)
        ax.set_xscale("log")
        ax.set_xlabel("KV bytes held (% of full)")
        ax.set_ylabel("score")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        fig.savefig(out / f"score_vs_kv_{task.replace('/', '_')}.png", dpi=120)
        plt.close(fig)


def score_vs_length(records, out):
    """Full-KV score against context length, one line per task (the baseline before compression)."""
    by_task = collections.defaultdict(lambda: collections.defaultdict(list))  # task -> length -> scores
    for r in records:
        if r.get("press", "none") == "none":
            by_task[r["task"]][r["context_length"]].append(r["score"])
    if not by_task:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for task, lengths in sorted(by_task.items()):
        xs = sorted(lengths)
        ax.plot(xs, [100 * sum(lengths[x]) / len(lengths[x]) for x in xs], marker="o", label=task)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({x for lengths in by_task.values() for x in lengths}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("score, full KV")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "score_vs_length_full_kv.png", dpi=120)
    plt.close(fig)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = sys.argv[1:]
    if args[0] == "--presses":
        presses, name, folders = set(args[1].split(",")) | {"none"}, args[3], args[4:]
        records = [r for r in read_records(folders) if r.get("press", "none") in presses]
        score_vs_kv(records, pathlib.Path(folders[0]), name)
        print(f"plots written to {folders[0]}")
        return
    out = pathlib.Path(sys.argv[1])
    records = read_records(sys.argv[1:])
    niah_heatmaps(records, out)
    score_vs_kv(records, out)
    score_vs_length(records, out)
    print(f"plots written to {out}")


if __name__ == "__main__":
    main()
