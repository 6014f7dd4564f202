"""Load on a real `kvshrink serve` (mpirun -np 2, 127.0.0.1) through scripts/bench_serve.py: 64
concurrent streaming clients for a bounded time, each sending greedy requests over a handful of
short prompts.

Asserts: zero failed requests; every answer equal to that prompt's single-request answer (the
same prompt sent alone, one at a time, before the load); all 64 clients in flight at once; after
the load, nothing running or waiting, the KV pool empty, and every rank's resident memory back to
its idle level: within max(10 %, 32 MiB) of the idle value measured after a warm-up.

Why after a warm-up: the KV pool allocates its slabs (64 blocks each) on demand and keeps them for
reuse (docs/serving.md), so the first load raises the resident set by the slabs it touched and that
stays. The warm-up is a load of the same shape (64 at once over the same prompts), which touches the
slabs the test's load can need: every prompt here is <= 16 tokens, so with 16 generated tokens
each sequence holds at most 2 blocks per head whatever mix of prompts is in flight. A leak (a
sequence's blocks or a connection's buffers not returned) then shows as growth past the warmed idle
level; the tolerance covers allocator noise (glibc's arenas of the HTTP threads).

    python3 tests/serve/serve_load_test.py --kvshrink build/kvshrink --mpirun mpirun \
        --model models/smollm2-135m-instruct.gguf [--clients 64 --duration 30]
"""
import argparse
import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from bench_serve import Bench, report  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

# Short, distinct prompts (<= 16 tokens each, see above).
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a small robot",
           "The three primary colors are", "To make a cup of tea, first", "In 1969, the first person to walk on",
           "The quick brown fox", "Water boils at a temperature of"]
MAX_TOKENS = 16
MIB = 1 << 20


def fail(message, server=None):
    print("FAIL:", message)
    if server is not None:
        print(server.output()[-4000:])
    sys.exit(1)


def rank_pids(server):
    """The kvshrink ranks: mpirun's children (rank 0's pid, which serve prints, first)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                is_kvshrink = b"kvshrink" in f.read()
        except (OSError, StopIteration):
            continue
        if ppid == server.proc.pid and is_kvshrink:
            pids.append(int(entry))
    return [server.rank0_pid] + sorted(p for p in pids if p != server.rank0_pid)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def wait_drained(server, timeout=60):
    """/metrics once nothing is running or waiting (the requests' ends are in)."""
    deadline = time.time() + timeout
    while True:
        m = server.metrics()
        if m["kvshrink:num_requests_running"] == 0 and m["kvshrink:num_requests_waiting"] == 0:
            return m
        if time.time() > deadline:
            fail(f"still running after the load: {m}", server)
        time.sleep(0.2)


def load(server, n, clients, duration=None):
    """n requests cycling over PROMPTS with at most `clients` in flight (stopped after `duration` s)."""
    bench = Bench(server.base_url, max_concurrency=clients, duration=duration, timeout=300)
    requests = [(i % len(PROMPTS), PROMPTS[i % len(PROMPTS)], MAX_TOKENS, False) for i in range(n)]
    return asyncio.run(bench.run(requests))


def check_answers(summary, expected, server, what):
    if summary["failed"]:
        fail(f"{what}: {summary['failed']} failed requests: {summary['errors']}", server)
    wrong = [r for r in summary["requests"] if r["text"] != expected[r["prompt_index"]]]
    if wrong:
        r = wrong[0]
        fail(f"{what}: {len(wrong)} of {len(summary['requests'])} answers differ from the single-request one; "
             f"prompt {PROMPTS[r['prompt_index']]!r}: {r['text']!r} != {expected[r['prompt_index']]!r}", server)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kvshrink", required=True)
    parser.add_argument("--mpirun", default="mpirun")
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (then it drains)")
    args = parser.parse_args()
    # 192 MiB per rank holds the 64 sequences (<= 32 positions each) many times over: no preemption.
    with ServeProcess(args.kvshrink, args.mpirun, args.model, np=2,
                      extra=["--ctx-size", "1024", "--kv-memory", "192MiB"]) as server:
        server.wait_ready()
        pids = rank_pids(server)
        cold = [rss_bytes(p) for p in pids]

        # The single-request answers: each prompt alone, one at a time.
        single = load(server, len(PROMPTS), clients=1)
        if single["failed"]:
            fail(f"single requests failed: {single['errors']}", server)
        expected = {r["prompt_index"]: r["text"] for r in single["requests"]}
        for i, text in sorted(expected.items()):
            if not text:
                fail(f"empty answer for {PROMPTS[i]!r}", server)
            print(f"single: {PROMPTS[i]!r} -> {text!r}")

        # Warm-up: two waves of the same shape as the load (see the docstring).
        warm = load(server, 2 * args.clients, clients=args.clients)
        check_answers(warm, expected, server, "warm-up")
        wait_drained(server)
        time.sleep(1.0)
        idle = [rss_bytes(p) for p in pids]

        # The load: `clients` streaming clients, each sending its next request as soon as its last
        # one ends, for `duration` seconds.
        summary = load(server, 100000, clients=args.clients, duration=args.duration)
        report(summary)
        check_answers(summary, expected, server, "load")
        if summary["peak_concurrency"] != args.clients:
            fail(f"only {summary['peak_concurrency']} of {args.clients} clients were in flight at once", server)
        after_metrics = wait_drained(server)
        time.sleep(1.0)
        after = [rss_bytes(p) for p in pids]

        print(f"{summary['completed']} requests by {args.clients} clients in {summary['duration']:.1f} s, "
              f"server peak running {summary.get('server_peak_running')}, KV pool peak "
              f"{summary.get('server_peak_kv_pool_used_bytes', 0) / MIB:.1f} MiB (warm-up "
              f"{warm.get('server_peak_kv_pool_used_bytes', 0) / MIB:.1f} MiB)")
        for rank, (c, i, a) in enumerate(zip(cold, idle, after)):
            print(f"rank {rank} (pid {pids[rank]}) RSS: cold {c / MIB:.1f} MiB, idle after warm-up "
                  f"{i / MIB:.1f} MiB, after the load {a / MIB:.1f} MiB")
        if after_metrics["kvshrink:kv_pool_used_bytes"] != 0:
            fail(f"KV pool not empty after the load: {after_metrics['kvshrink:kv_pool_used_bytes']} bytes", server)
        for rank, (i, a) in enumerate(zip(idle, after)):
            tolerance = max(0.10 * i, 32 * MIB)
            if abs(a - i) > tolerance:
                fail(f"rank {rank}: RSS {a / MIB:.1f} MiB after the load, idle {i / MIB:.1f} MiB "
                     f"(tolerance {tolerance / MIB:.1f} MiB)", server)
        code = server.terminate(60)
        if code != 0:
            fail(f"serve exited with {code}", server)
    print("OK")


if __name__ == "__main__":
    main()
