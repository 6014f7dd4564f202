#!/usr/bin/env python3
"""Bytes each rank sends per prefill token and per decode step, measured against a model.

    scripts/comm_traffic.py [--kvshrink build/kvshrink] [--model models/smollm2-135m-instruct.gguf]
                            [--np 1 2 3] [--json out.json]

Runs `kvshrink bench-throughput` (full KV, one step per prefill: --batch-size 4096) in pairs that
differ only in prompt length or in decode steps, under mpirun -np N, with KVSHRINK_COMM_STATS=1
(comm/traffic.h: the message size handed to each collective, per plane and rank) and Open MPI's
monitoring component (the bytes each rank's point-to-point sends carried, what the collective
algorithms actually moved). The differences cancel start-up (loading, checks):

    prefill token  = (1 x 512 prompt - 1 x 256 prompt) / 256
    decode step, b = (b x 512 + 33 output - b x 512 + 1 output) / 32, b = 1 and 8

and compares them with the model in docs/cluster.md, computed here from the GGUF's config.
Prints a markdown table (--from-json: again, from an earlier run's --json file).
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the model's config, read from the GGUF header (llama.* keys, the token list's length) ---------
def gguf_config(path):
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def string():
            return f.read(read("Q")).decode("utf-8", "replace")

        def value(kind):
            if kind in scalar:
                return read(scalar[kind])
            if kind == 8:
                return string()
            if kind == 9:
                inner, count = read("I"), read("Q")
                items = [value(inner) for _ in range(count)]
                return items if inner != 8 else len(items)  # a string array: its length is enough
            raise ValueError(f"GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read("I")
        read("Q")
        meta = {}
        for _ in range(read("Q")):
            key = string()
            meta[key] = value(read("I"))
    arch = meta["general.architecture"]
    return {
        "n_embd": meta[f"{arch}.embedding_length"],
        "n_layer": meta[f"{arch}.block_count"],
        "n_head": meta[f"{arch}.attention.head_count"],
        "n_head_kv": meta[f"{arch}.attention.head_count_kv"],
        "vocab": meta.get(f"{arch}.vocab_size", meta["tokenizer.ggml.tokens"]),
    }


# --- the model of what a step sends (docs/cluster.md) ---------------------------------------------
def step_message_bytes(rows):
    """MessagePack size of a step message (engine/serving/step_message.cpp) with these rows, each
    (tokens, all token ids >= 256, sequence id < 128): 60 bytes of keys and empty arrays, per row
    26 bytes (+ 3 per token; 24 in all for one token: fixarray header) plus the 8-byte length."""
    size = 60
    for tokens in rows:
        size += 1 + 3 + 1 + 7 + (1 if tokens < 16 else 3) + 3 * tokens + 7 + 1
    return 8 + size


def model(config, p, prefill_tokens=0, decode_rows=0, live=0):
    """Per step: payload per plane and the average bytes one rank sends under volume-optimal
    algorithms (ring/tree all-reduce 2(p-1)/p x S, all-gather and broadcast (p-1)/p x S)."""
    e, layers, vocab = config["n_embd"], config["n_layer"], config["vocab"]
    rows = prefill_tokens + decode_rows
    sampled = decode_rows if decode_rows else 1
    reduce_payload = 2 * layers * rows * e * 4
    gather_payload = sampled * vocab * 4 if p > 1 else 0
    rows_list = [prefill_tokens] if prefill_tokens else [1] * decode_rows
    bcast_payload = step_message_bytes(rows_list)
    report_payload = p * (1 + 5 * live) * 8
    f_reduce, f_other = 2 * (p - 1) / p, (p - 1) / p
    return {
        "data": reduce_payload + gather_payload,
        "control": bcast_payload + report_payload,
        "data_sent": f_reduce * reduce_payload + f_other * gather_payload,
        "control_sent": f_other * bcast_payload + f_reduce * report_payload,
    }


# --- measuring -------------------------------------------------------------------------------------
def run(args, p, prompts, input_len, output_len, scratch):
    prefix = os.path.join(scratch, f"mon-np{p}-{prompts}x{input_len}+{output_len}")
    env = dict(os.environ, KVSHRINK_COMM_STATS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    command = ["mpirun", "--oversubscribe", "-np", str(p),
               "--mca", "pml_monitoring_enable", "2", "--mca", "pml_monitoring_enable_output", "3",
               "--mca", "pml_monitoring_filename", prefix,
               args.kvshrink, "bench-throughput", "--model", args.model, "--num-prompts", str(prompts),
               "--input-len", str(input_len), "--output-len", str(output_len), "--batch-size", "4096",
               "--kv-memory", "512MiB", "-o", "json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"comm_traffic: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    stats = {}  # (plane, rank) -> counts
    for line in done.stderr.splitlines():
        if line.startswith("kvshrink: comm-stats "):
            s = json.loads(line[len("kvshrink: comm-stats "):])
            stats[(s["plane"], s["rank"])] = s
    wire = {}  # rank -> bytes its collectives' point-to-point sends carried (Open MPI monitoring)
    for rank in range(p):
        total = 0
        path = f"{prefix}.{rank}.prof"
        if os.path.exists(path):
            for line in open(path):
                m = re.match(r"I\t(\d+)\t(\d+)\t(\d+) bytes", line)
                if m:
                    total += int(m.group(3))
        wire[rank] = total
    return stats, wire


def payload(s):
    return s["all_reduce"]["bytes"] + s["all_gather"]["bytes"] + s["broadcast"]["bytes"]


def difference(a, b, scale, p):
    """(b - a) / scale: per plane payload of rank 0, and each rank's wire bytes."""
    (sa, wa), (sb, wb) = a, b
    out = {plane: (payload(sb[(plane, 0)]) - payload(sa[(plane, 0)])) / scale for plane in ("data", "control")}
    out["calls"] = {plane: sum(sb[(plane, 0)][k]["calls"] - sa[(plane, 0)][k]["calls"]
                               for k in ("all_reduce", "all_gather", "broadcast")) / scale
                    for plane in ("data", "control")}
    out["wire"] = [(wb[r] - wa[r]) / scale for r in range(p)]
    return out


def print_table(rows):
    print("| np | per | data plane payload: model / measured | control plane payload: model / measured "
          "| collectives (data + control) | sent per rank, mean: model / measured "
          "| sent by rank 0 / by each other rank, measured |")
    print("|--:|---|--:|--:|--:|--:|--:|")
    for p, name, m, mod in rows:
        wire = m["wire"]
        mean = sum(wire) / len(wire)
        others = sorted({round(w) for w in wire[1:]})
        split = f"{wire[0]:,.0f} / " + ", ".join(f"{w:,}" for w in others) if p > 1 else "0"
        print(f"| {p} | {name} | {mod['data']:,.0f} / {m['data']:,.0f} | {mod['control']:,.0f} / {m['control']:,.0f} "
              f"| {m['calls']['data']:g} + {m['calls']['control']:g} "
              f"| {mod['data_sent'] + mod['control_sent']:,.0f} / {mean:,.0f} | {split} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kvshrink", default=os.path.join(ROOT, "build", "kvshrink"))
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "smollm2-135m-instruct.gguf"))
    parser.add_argument("--np", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--from-json", help="print the table of an earlier --json file, running nothing")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)["results"]
        print_table([(int(p), name, c["measured"], c["model"]) for p, cases in saved.items()
                     for name, c in cases.items()])
        return
    config = gguf_config(args.model)
    print(f"config: {config}", file=sys.stderr)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for p in args.np:
            print(f"np {p} ...", file=sys.stderr)
            r = {key: run(args, p, *shape, scratch) for key, shape in {
                "1x256+1": (1, 256, 1), "1x512+1": (1, 512, 1), "1x512+33": (1, 512, 33),
                "8x512+1": (8, 512, 1), "8x512+33": (8, 512, 33)}.items()}
            cases = [
                ("prefill token", difference(r["1x256+1"], r["1x512+1"], 256, p),
                 # 256 more rows in the one prefill step: the data plane scales, the control plane
                 # grows by the 256 more token ids in the step message.
                 {k: (model(config, p, prefill_tokens=512)[k] - model(config, p, prefill_tokens=256)[k]) / 256
                  for k in ("data", "control", "data_sent", "control_sent")}),
                ("decode step, 1 sequence", difference(r["1x512+1"], r["1x512+33"], 32, p),
                 model(config, p, decode_rows=1, live=1)),
                ("decode step, 8 sequences", difference(r["8x512+1"], r["8x512+33"], 32, p),
                 model(config, p, decode_rows=8, live=8)),
            ]
            raw[p] = {name: {"measured": m, "model": mod} for name, m, mod in cases}
            for name, m, mod in cases:
                rows.append((p, name, m, mod))
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "results": raw}, f, indent=1)


if __name__ == "__main__":
    main()
