#!/usr/bin/env python3
"""Load on an OpenAI-compatible server (`kvshrink serve`, or any other), after `vllm bench serve`:
a bounded number of streamed requests sent at a request rate (Poisson arrivals) or with a bounded
number in flight, and the latency / throughput figures of those that ran.

    # 64 synthetic prompts of ~1024 tokens, 64 generated each (end of generation ignored), at most
    # 16 in flight
    python3 scripts/bench_serve.py --base-url http://127.0.0.1:8000 --num-prompts 64 \
        --input-len 1024 --output-len 64 --max-concurrency 16

    # 2 requests/s (Poisson, --seed), each compressed by snapkv to 6 % of its KV
    python3 scripts/bench_serve.py --base-url http://127.0.0.1:8000 --request-rate 2 \
        --extra-body '{"kv_press": "snapkv", "kv_budget": 0.06}'

    # prompts from a file, chat endpoint, stop after 60 s, per-request results kept
    python3 scripts/bench_serve.py --endpoint /v1/chat/completions --dataset prompts.jsonl \
        --duration 60 --result-json out.json

Requests (all streamed, `stream_options.include_usage`, temperature 0):
- synthetic (default): `--num-prompts` prompts of `--input-len` random common words (about one
  token each; the mean prompt tokens the server counted is printed), `max_tokens=--output-len`,
  `ignore_eos: true` so every request generates exactly that many tokens;
- `--dataset FILE.jsonl`: one prompt a line, a JSON string or an object with "prompt" (and an
  optional "max_tokens"); cycled to `--num-prompts`; `ignore_eos` only with `--ignore-eos`.
For `/v1/chat/completions` a prompt is sent as one user message. `--extra-body` is merged into
every body (kvshrink's `kv_press` / `kv_budget`, or `top_k`, `seed`, ...).

Figures (as vllm bench serve): TTFT from sending to the first chunk with content; TPOT = (E2E -
TTFT) / (output tokens - 1) per request; ITL = the gaps between content chunks; E2E; request,
output and total token throughput over the run's duration; peak and time-weighted mean of the
requests in flight on the client. If the server has /metrics (kvshrink's Prometheus names), it is
read before and after and sampled during the run (every 0.25 s): the peaks of
`kvshrink:num_requests_running` and `kvshrink:num_requests_waiting`, the KV pool's peak and the
preemptions during the run. "Queued: yes" when the server's running peak stayed below the client's
peak in flight, i.e. some requests waited for admission (KV room or --max-num-seqs); the waiting
gauge alone is above 0 at almost every arrival (a request counts as waiting until the step in
progress ends), so its peak is printed but not used for that.

`--api-key` (or OPENAI_API_KEY) is sent as `Authorization: Bearer`. `--result-json PATH` writes
the figures and every request's record (prompt index, text, tokens, latencies, error).
Exit status: 0 when every request succeeded, 1 when any failed.
"""
import argparse
import asyncio
import json
import math
import os
import random
import sys
import time

import aiohttp

# Common one-token English words for synthetic prompts.
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there one all we their been has when who will more no if "
         "out so said what up its about into than them can only other new some could time these two "
         "may then do first any my now such like our over man me even most made after also did many "
         "before must through back years where much your way well down should because each just those "
         "people how too little state good very make world still own see men work long get here "
         "between both life being under never day same another know while last might us great old "
         "year off come since against go came right used take three").split()


def synthetic_prompts(n, input_len, seed):
    """n distinct prompts of input_len random common words (about input_len tokens each)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(input_len)) for _ in range(n)]


def load_dataset(path):
    """[(prompt, max_tokens or None)] from a JSONL file: a string or {"prompt", "max_tokens"?} a line."""
    items = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            if isinstance(v, str):
                items.append((v, None))
            else:
                items.append((v["prompt"], v.get("max_tokens")))
    if not items:
        raise SystemExit(f"{path}: no prompts")
    return items


def parse_metrics(text):
    """{name (with labels): value} from Prometheus text."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def percentile(values, p):
    """The p-th percentile (linear interpolation, as numpy's default); nan when empty."""
    if not values:
        return math.nan
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def mean(values):
    return sum(values) / len(values) if values else math.nan


class Bench:
    """One run: the settings, then run() sends the requests and returns the summary dict."""

    def __init__(self, base_url, endpoint="/v1/completions", model=None, api_key=None, request_rate=math.inf,
                 max_concurrency=None, seed=0, extra_body=None, duration=None, metrics_interval=0.25,
                 timeout=600.0):
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.request_rate = request_rate
        self.max_concurrency = max_concurrency
        self.seed = seed
        self.extra_body = extra_body or {}
        self.duration = duration  # seconds after which no new request is sent (None: all of them)
        self.metrics_interval = metrics_interval
        self.timeout = timeout
        self._in_flight = 0
        self._flight_log = []  # (time, requests in flight after the change)

    def _body(self, prompt, max_tokens, ignore_eos):
        body = {"max_tokens": max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        if self.model:
            body["model"] = self.model
        if ignore_eos:
            body["ignore_eos"] = True
        if self.endpoint.endswith("chat/completions"):
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(self.extra_body)
        return body

    def _flight(self, delta):
        self._in_flight += delta
        self._flight_log.append((time.perf_counter(), self._in_flight))

    async def _one(self, session, index, prompt_index, prompt, max_tokens, ignore_eos):
        """One streamed request: its record (text, tokens, ttft, itl, e2e, error)."""
        rec = {"index": index, "prompt_index": prompt_index, "success": False, "text": "", "error": "",
               "prompt_tokens": 0, "output_tokens": 0, "ttft": None, "itl": [], "e2e": None,
               "finish_reason": None}
        chat = self.endpoint.endswith("chat/completions")
        self._flight(+1)
        start = time.perf_counter()
        last = None
        pieces = []
        chunks = 0
        try:
            async with session.post(self.base_url + self.endpoint, json=self._body(prompt, max_tokens, ignore_eos),
                                    headers=self.headers) as resp:
                if resp.status != 200:
                    rec["error"] = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    return rec
                done = False
                buffer = b""
                async for data in resp.content.iter_any():
                    buffer += data
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        for line in event.decode().splitlines():
                            if not line.startswith("data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == "[DONE]":
                                done = True
                                continue
                            chunk = json.loads(payload)
                            if "error" in chunk:
                                rec["error"] = f"stream error: {json.dumps(chunk['error'])[:300]}"
                                return rec
                            if chunk.get("usage"):
                                rec["prompt_tokens"] = chunk["usage"]["prompt_tokens"]
                                rec["output_tokens"] = chunk["usage"]["completion_tokens"]
                            for choice in chunk.get("choices") or []:
                                piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                                if piece:
                                    now = time.perf_counter()
                                    if rec["ttft"] is None:
                                        rec["ttft"] = now - start
                                    else:
                                        rec["itl"].append(now - last)
                                    last = now
                                    pieces.append(piece)
                                    chunks += 1
                                if choice.get("finish_reason"):
                                    rec["finish_reason"] = choice["finish_reason"]
                if not done:
                    rec["error"] = "the stream ended before data: [DONE]"
                    return rec
            rec["e2e"] = time.perf_counter() - start
            rec["text"] = "".join(pieces)
            if not rec["output_tokens"]:
                rec["output_tokens"] = chunks  # a server without include_usage: one chunk a token
            if rec["ttft"] is None:
                rec["ttft"] = rec["e2e"]  # nothing generated
            rec["success"] = True
            return rec
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            return rec
        finally:
            self._flight(-1)

    async def _get(self, session, path):
        async with session.get(self.base_url + path, headers=self.headers) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def _metrics(self, session):
        try:
            return parse_metrics(await self._get(session, "/metrics"))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async def _sample_metrics(self, session, samples, stop):
        while not stop.is_set():
            m = await self._metrics(session)
            if m is not None:
                samples.append(m)
            try:
                await asyncio.wait_for(stop.wait(), self.metrics_interval)
            except asyncio.TimeoutError:
                pass

    async def run(self, requests):
        """requests: [(prompt_index, prompt, max_tokens, ignore_eos)], sent in order. Returns the summary
        dict, with "requests" the records in sending order."""
        connector = aiohttp.TCPConnector(limit=0)  # no client-side cap on connections
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if not self.model:
                models = json.loads(await self._get(session, "/v1/models"))
                self.model = models["data"][0]["id"]
            before = await self._metrics(session)
            samples, stop = [], asyncio.Event()
            sampler = asyncio.create_task(self._sample_metrics(session, samples, stop)) if before else None
            semaphore = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
            rng = random.Random(self.seed)

            async def limited(i, req):
                if semaphore is None:
                    return await self._one(session, i, *req)
                async with semaphore:
                    if self.duration is not None and time.perf_counter() - start > self.duration:
                        return None  # the time is up before it got a slot: not sent
                    return await self._one(session, i, *req)

            start = time.perf_counter()
            self._flight_log = [(start, 0)]
            tasks = []
            for i, req in enumerate(requests):
                if self.duration is not None and time.perf_counter() - start > self.duration:
                    break
                tasks.append(asyncio.create_task(limited(i, req)))
                if self.request_rate != math.inf:
                    await asyncio.sleep(rng.expovariate(self.request_rate))  # Poisson arrivals
                else:
                    await asyncio.sleep(0)
            records = [r for r in await asyncio.gather(*tasks) if r is not None]
            end = time.perf_counter()
            if sampler:
                stop.set()
                await sampler
            after = await self._metrics(session)
        return self._summary(records, end - start, start, end, before, samples, after)

    def _summary(self, records, duration, start, end, before, samples, after):
        ok = [r for r in records if r["success"]]
        out_tokens = sum(r["output_tokens"] for r in ok)
        in_tokens = sum(r["prompt_tokens"] for r in ok)
        ttft = [r["ttft"] for r in ok]
        tpot = [(r["e2e"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
        itl = [x for r in ok for x in r["itl"]]
        e2e = [r["e2e"] for r in ok]
        # Requests in flight on the client: peak and time-weighted mean over [start, end].
        weighted, peak = 0.0, 0
        for (t0, n), (t1, _) in zip(self._flight_log, self._flight_log[1:] + [(end, 0)]):
            weighted += n * (max(t1, t0) - t0)
            peak = max(peak, n)
        s = {
            "base_url": self.base_url, "endpoint": self.endpoint, "model": self.model,
            "request_rate": self.request_rate, "max_concurrency": self.max_concurrency,
            "extra_body": self.extra_body, "duration_limit": self.duration,
            "completed": len(ok), "failed": len(records) - len(ok), "duration": duration,
            "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
            "mean_input_tokens": in_tokens / len(ok) if ok else math.nan,
            "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration,
            "total_token_throughput": (in_tokens + out_tokens) / duration,
            "peak_concurrency": peak, "mean_concurrency": weighted / duration if duration > 0 else 0.0,
            "errors": sorted({r["error"] for r in records if not r["success"]})[:10],
        }
        for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
            s[f"mean_{name}_ms"] = 1000 * mean(values)
            s[f"median_{name}_ms"] = 1000 * percentile(values, 50)
            s[f"p99_{name}_ms"] = 1000 * percentile(values, 99)
        if before is not None and samples:
            peak_of = lambda name: max(m.get(name, 0.0) for m in samples)  # noqa: E731
            s["server_peak_waiting"] = peak_of("kvshrink:num_requests_waiting")
            s["server_peak_running"] = peak_of("kvshrink:num_requests_running")
            s["server_peak_kv_pool_used_bytes"] = peak_of("kvshrink:kv_pool_used_bytes")
            # Queued: the server never ran all the requests in flight at once. (The waiting gauge
            # itself is above 0 at nearly every arrival: it counts requests taken into the step in
            # progress until that step ends, so its peak alone does not say a request waited for room.)
            s["queued"] = s["server_peak_running"] < peak
            if after is not None:
                s["server_preemptions"] = (after.get("kvshrink:num_preemptions_total", 0.0)
                                           - before.get("kvshrink:num_preemptions_total", 0.0))
                s["server_running_after"] = after.get("kvshrink:num_requests_running")
                s["server_kv_pool_used_bytes_after"] = after.get("kvshrink:kv_pool_used_bytes")
        s["requests"] = records
        return s


def report(s, out=sys.stdout):
    """The summary as vllm bench serve prints it."""
    line = lambda k, v: print(f"{k:<40}{v}", file=out)  # noqa: E731
    print("{s:{c}^60}".format(s=" Serving Benchmark Result ", c="="), file=out)
    line("Successful requests:", s["completed"])
    line("Failed requests:", s["failed"])
    line("Maximum request concurrency:", s["max_concurrency"])
    line("Request rate (req/s):", s["request_rate"])
    line("Benchmark duration (s):", f"{s['duration']:.2f}")
    line("Total input tokens:", s["total_input_tokens"])
    line("Mean input tokens per request:", f"{s['mean_input_tokens']:.1f}")
    line("Total generated tokens:", s["total_output_tokens"])
    line("Request throughput (req/s):", f"{s['request_throughput']:.3f}")
    line("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}")
    line("Total token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")
    line("Peak concurrency (client):", s["peak_concurrency"])
    line("Mean concurrency (client):", f"{s['mean_concurrency']:.2f}")
    for name, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                        ("itl", "Inter-token Latency"), ("e2e", "End-to-end Latency")):
        print("{s:{c}^60}".format(s=title, c="-"), file=out)
        for stat in ("mean", "median", "p99"):
            line(f"{stat.capitalize() if stat != 'p99' else 'P99'} {name.upper()} (ms):", f"{s[f'{stat}_{name}_ms']:.2f}")
    if "queued" in s:
        print("{s:{c}^60}".format(s="Server (/metrics)", c="-"), file=out)
        line("Peak running (server):", int(s["server_peak_running"]))
        line("Peak waiting (server):", int(s["server_peak_waiting"]))
        line("Queued:", "yes" if s["queued"] else "no")
        line("Peak KV pool used (MiB):", f"{s['server_peak_kv_pool_used_bytes'] / 1048576:.1f}")
        if "server_preemptions" in s:
            line("Preemptions:", int(s["server_preemptions"]))
    for e in s["errors"]:
        print("error:", e, file=out)
    print("=" * 60, file=out)


def build_requests(args):
    """[(prompt_index, prompt, max_tokens, ignore_eos)] for the command line's settings."""
    if args.dataset:
        items = load_dataset(args.dataset)
        ignore_eos = bool(args.ignore_eos)
        return [(i % len(items), items[i % len(items)][0], items[i % len(items)][1] or args.output_len, ignore_eos)
                for i in range(args.num_prompts)]
    ignore_eos = args.ignore_eos is not False
    return [(i, p, args.output_len, ignore_eos)
            for i, p in enumerate(synthetic_prompts(args.num_prompts, args.input_len, args.seed))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server, without /v1")
    p.add_argument("--endpoint", default="/v1/completions", help="/v1/completions or /v1/chat/completions")
    p.add_argument("--model", help="model name to send (default: the first of /v1/models)")
    p.add_argument("--num-prompts", type=int, default=100, help="requests to send")
    p.add_argument("--request-rate", type=float, default=math.inf,
                   help="requests per second, Poisson arrivals (default inf: all at once)")
    p.add_argument("--max-concurrency", type=int, help="most requests in flight at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and synthetic prompts")
    p.add_argument("--input-len", type=int, default=1024, help="synthetic prompt length, words (~tokens)")
    p.add_argument("--output-len", type=int, default=128, help="max_tokens of each request")
    p.add_argument("--dataset", help="JSONL of prompts (a string or {\"prompt\", \"max_tokens\"?} a line)")
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=None,
                   help="send ignore_eos (default: on for synthetic prompts, off for --dataset)")
    p.add_argument("--extra-body", type=json.loads, default={}, help="JSON merged into every request body")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="Bearer key (or OPENAI_API_KEY)")
    p.add_argument("--duration", type=float, help="send no new request after this many seconds")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    p.add_argument("--result-json", help="write the figures and every request's record here")
    args = p.parse_args(argv)
    bench = Bench(args.base_url, args.endpoint, args.model, args.api_key, args.request_rate, args.max_concurrency,
                  args.seed, args.extra_body, args.duration, timeout=args.timeout)
    summary = asyncio.run(bench.run(build_requests(args)))
    report(summary)
    if args.result_json:
        with open(args.result_json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
