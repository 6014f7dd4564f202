"""The OpenAI API of `kvshrink serve` with real clients: the official `openai` Python client and
`curl -N`, against a real server under `mpirun -np 2` on the default model.

    python3 tests/serve/serve_openai_test.py --kvshrink build/kvshrink --mpirun mpirun \
        --model models/smollm2-135m-instruct.gguf
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_process import ServeProcess  # noqa: E402

ARGS = None
SERVER = None
KEY = "test-key-123"
MODEL_NAME = "smollm2-135m-instruct"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a small robot"]


def client(**kw):
    return openai.OpenAI(base_url=SERVER.base_url + "/v1", api_key=KEY, max_retries=0, timeout=120, **kw)


def generate(prompt, n, chat=False):
    """`kvshrink generate` greedy output for the same prompt at the same np."""
    cmd = [ARGS.mpirun, "--oversubscribe", "-np", "2", ARGS.kvshrink, "generate", "--model", ARGS.model,
           "-p", prompt, "-n", str(n), "--temperature", "0", "--no-stats", "--ctx-size", "2048"]
    if chat:
        cmd.append("--chat")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    assert out.endswith("\n")
    return out[:-1]


def raw(method, path, body=None, headers=None, data=None):
    """(status, headers, parsed JSON or text) of one HTTP request."""
    req = urllib.request.Request(SERVER.base_url + path, method=method,
                                 data=data if data is not None else (json.dumps(body).encode() if body is not None else None))
    req.add_header("Content-Type", "application/json")
    for k, v in (headers if headers is not None else {"Authorization": "Bearer " + KEY}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except json.JSONDecodeError:
        return status, hdrs, text


def assert_openai_error(test, status, body, expected_status):
    test.assertEqual(status, expected_status, body)
    test.assertIsInstance(body, dict, body)
    err = body["error"]
    for field in ("message", "type", "param", "code"):
        test.assertIn(field, err)
    test.assertTrue(err["message"])


class Completions(unittest.TestCase):
    def test_greedy_completion_equals_generate(self):
        c = client()
        for prompt in PROMPTS[:2]:
            r = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=16, temperature=0)
            self.assertEqual(r.choices[0].text, generate(prompt, 16), prompt)
            self.assertEqual(r.object, "text_completion")
            self.assertEqual(r.usage.completion_tokens, 16)
            self.assertEqual(r.choices[0].finish_reason, "length")
            self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 16)

    def test_greedy_chat_equals_generate_chat(self):
        r = client().chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=24, temperature=0)
        self.assertEqual(r.choices[0].message.role, "assistant")
        expected = generate("Name a colour.", 24, chat=True)
        self.assertEqual(r.choices[0].message.content, expected)
        if r.choices[0].finish_reason == "stop":  # ended on <|im_end|> before max_tokens
            self.assertLess(r.usage.completion_tokens, 24)

    def test_stream_equals_whole_with_usage(self):
        c = client()
        prompt = PROMPTS[2]
        whole = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=20, temperature=0)
        chunks = list(c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=20, temperature=0,
                                           stream=True, stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        self.assertEqual(text, whole.choices[0].text)
        self.assertGreater(len([ch for ch in chunks if ch.choices]), 2)  # streamed, not one piece
        self.assertEqual([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1], "length")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 20)
        self.assertEqual(chunks[-1].usage.prompt_tokens, whole.usage.prompt_tokens)

    def test_chat_stream(self):
        c = client()
        messages = [{"role": "user", "content": "Say hello."}]
        whole = c.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=12, temperature=0)
        chunks = list(c.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=12, temperature=0,
                                                stream=True))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
        self.assertEqual(text, whole.choices[0].message.content)

    def test_stop_string_cuts_text(self):
        c = client()
        full = c.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=24, temperature=0).choices[0].text
        stop = full[8:11]  # three characters from the middle of the greedy text
        cut = full[: full.index(stop)]
        for stream in (False, True):
            if stream:
                chunks = list(c.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=24,
                                                   temperature=0, stop=[stop], stream=True))
                text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
                reason = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
            else:
                r = c.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=24, temperature=0,
                                         stop=[stop])
                text, reason = r.choices[0].text, r.choices[0].finish_reason
            self.assertEqual(text, cut, (stop, stream))
            self.assertEqual(reason, "stop")

    def test_kv_extension_fields(self):
        c = client()
        prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)
        full = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0)
        pressed = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0,
                                       extra_body={"kv_press": "snapkv", "kv_budget": 0.25})
        self.assertEqual(full.kv["press"], "none")
        self.assertAlmostEqual(full.kv["share_held"], 1.0)
        self.assertEqual(pressed.kv["press"], "snapkv")
        self.assertEqual(pressed.kv["budget"], 0.25)
        self.assertLess(pressed.kv["share_at_compression"], 0.4)
        self.assertGreater(pressed.kv["share_at_compression"], 0.1)
        self.assertLess(pressed.kv["bytes_held"], full.kv["bytes_held"])

    def test_models_health_metrics(self):
        models = client().models.list()
        self.assertEqual([m.id for m in models.data], [MODEL_NAME])
        self.assertEqual(SERVER.health(), 200)
        m = SERVER.metrics()
        for name in ("kvshrink:num_requests_running", "kvshrink:num_requests_waiting", "kvshrink:kv_pool_used_bytes",
                     "kvshrink:kv_pool_capacity_bytes", "kvshrink:kv_share_held", "kvshrink:prompt_tokens_total",
                     "kvshrink:generation_tokens_total", "kvshrink:num_preemptions_total",
                     "kvshrink:time_to_first_token_seconds_count", "kvshrink:time_per_output_token_seconds_count"):
            self.assertIn(name, m)
        self.assertGreater(m["kvshrink:kv_pool_capacity_bytes"], 0)

    def test_curl_raw_sse(self):
        body = json.dumps({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 5, "temperature": 0, "stream": True})
        out = subprocess.run(["curl", "-sN", SERVER.base_url + "/v1/completions", "-H", "Content-Type: application/json",
                              "-H", "Authorization: Bearer " + KEY, "-d", body], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        events = [e for e in out.split("\n\n") if e]
        self.assertTrue(all(e.startswith("data: ") for e in events), out)
        self.assertEqual(events[-1], "data: [DONE]")
        chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertIn("kv", chunks[-1])


class Errors(unittest.TestCase):
    def test_api_key(self):
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=SERVER.base_url + "/v1", api_key="wrong", max_retries=0).models.list()
        status, _, body = raw("GET", "/v1/models", headers={})
        assert_openai_error(self, status, body, 401)
        status, _, _ = raw("GET", "/health", headers={})
        self.assertEqual(status, 200)

    def test_bad_json_400(self):
        status, _, body = raw("POST", "/v1/completions", data=b"{not json")
        assert_openai_error(self, status, body, 400)
        status, _, body = raw("POST", "/v1/completions", body={"model": MODEL_NAME, "prompt": 5})
        assert_openai_error(self, status, body, 400)
        self.assertEqual(body["error"]["param"], "prompt")

    def test_not_found_404(self):
        with self.assertRaises(openai.NotFoundError):
            client().completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        status, _, body = raw("GET", "/v1/nothing")
        assert_openai_error(self, status, body, 404)

    def test_body_too_large_413(self):
        status, _, body = raw("POST", "/v1/completions", data=json.dumps({"prompt": "x" * 300000}).encode())
        assert_openai_error(self, status, body, 413)

    def test_unprocessable_422(self):
        c = client()
        cases = [dict(temperature=5.0), dict(n=2), dict(extra_body={"kv_press": "nosuchpress", "kv_budget": 0.5}),
                 dict(extra_body={"kv_press": "snapkv", "kv_budget": 2.0}), dict(max_tokens=10 ** 9),
                 dict(prompt="word " * 3000)]
        for case in cases:
            kw = dict(model=MODEL_NAME, prompt="hi", max_tokens=2)
            kw.update(case)
            with self.assertRaises(openai.UnprocessableEntityError, msg=str(case)[:80]):
                c.completions.create(**kw)
        # and the server is still up
        self.assertEqual(c.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2, temperature=0).usage.completion_tokens, 2)

    def test_disconnect_cancels_and_frees(self):
        with client().completions.create(model=MODEL_NAME, prompt="Count: 1, 2, 3,", max_tokens=1500, temperature=0,
                                         stream=True, extra_body={"ignore_eos": True}) as stream:
            for i, _ in enumerate(stream):
                if i == 3:
                    break  # leaving the block closes the connection
        deadline = time.time() + 10
        while time.time() < deadline:
            m = SERVER.metrics()
            if m["kvshrink:num_requests_running"] == 0 and m['kvshrink:request_success_total{finished_reason="abort"}'] >= 1:
                break
            time.sleep(0.1)
        self.assertEqual(m["kvshrink:num_requests_running"], 0)
        self.assertGreaterEqual(m['kvshrink:request_success_total{finished_reason="abort"}'], 1)
        self.assertLess(m["kvshrink:generation_tokens_total"], 10 ** 6)


def queue_limit_and_shutdown(test_case):
    """A second server with one running sequence and a waiting queue of one: a burst gets 429 with
    Retry-After; then SIGTERM lets the running request finish, refuses new ones, and exits 0."""
    with ServeProcess(ARGS.kvshrink, ARGS.mpirun, ARGS.model, np=2,
                      extra=["--max-num-seqs", "1", "--max-waiting", "1", "--ctx-size", "2048",
                             "--shutdown-timeout", "60"]) as server:
        server.wait_ready()
        url = server.base_url + "/v1/completions"
        results = []

        def post(max_tokens):
            req = urllib.request.Request(url, method="POST", data=json.dumps(
                {"prompt": "Tell me a story.", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}).encode())
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    results.append((r.status, dict(r.headers), json.loads(r.read())))
            except urllib.error.HTTPError as e:
                results.append((e.code, dict(e.headers), json.loads(e.read())))

        threads = [threading.Thread(target=post, args=(48,)) for _ in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        statuses = sorted(s for s, _, _ in results)
        test_case.assertIn(200, statuses)
        test_case.assertIn(429, statuses)
        for s, h, body in results:
            if s == 429:
                test_case.assertEqual(h.get("Retry-After"), "1")
                assert_openai_error(test_case, s, body, 429)

        running = threading.Thread(target=post, args=(64,))
        results.clear()
        running.start()
        time.sleep(1.0)  # it runs now
        code = None
        killer = threading.Thread(target=lambda: os.kill(server.rank0_pid, 15))
        killer.start()
        running.join()
        code = server.proc.wait(120)
        test_case.assertEqual(code, 0, server.output())
        test_case.assertEqual(results[0][0], 200, results)
        test_case.assertEqual(results[0][2]["usage"]["completion_tokens"], 64)
        test_case.assertEqual(results[0][2]["choices"][0]["finish_reason"], "length")
        with test_case.assertRaises(OSError):  # no longer listening
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        test_case.assertIn("SIGTERM", server.output())


class ConnectionLimit(unittest.TestCase):
    def test_past_max_connections_503(self):
        with ServeProcess(ARGS.kvshrink, ARGS.mpirun, ARGS.model, np=1, extra=["--max-connections", "1"]) as server:
            server.wait_ready()
            idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # holds the one place
            time.sleep(0.2)
            try:
                status, _, body = None, None, None
                try:
                    with urllib.request.urlopen(server.base_url + "/v1/models", timeout=10) as r:
                        status = r.status
                except urllib.error.HTTPError as e:
                    status, body = e.code, json.loads(e.read())
                assert_openai_error(self, status, body, 503)
                self.assertEqual(body["error"]["code"], "too_many_connections")
            finally:
                idle.close()
            time.sleep(0.2)
            self.assertEqual(server.health(), 200)  # the place is free again
            self.assertEqual(server.terminate(60), 0)


class StoppedRank(unittest.TestCase):
    def test_health_503_while_a_rank_is_stopped(self):
        with ServeProcess(ARGS.kvshrink, ARGS.mpirun, ARGS.model, np=2,
                          extra=["--health-stall-seconds", "1", "--ctx-size", "1024"]) as server:
            server.wait_ready()
            ranks = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
            workers = [int(p) for p in ranks if int(p) != server.rank0_pid]
            self.assertEqual(len(workers), 1, ranks)
            os.kill(workers[0], signal.SIGSTOP)  # idle: the next heartbeat step waits on it
            try:
                deadline = time.time() + 15
                while server.health() != 503 and time.time() < deadline:
                    time.sleep(0.2)
                with self.assertRaises(urllib.error.HTTPError) as failed:
                    urllib.request.urlopen(server.base_url + "/health", timeout=5)
                self.assertEqual(failed.exception.code, 503)
                self.assertIn("stalled", json.loads(failed.exception.read())["status"])
            finally:
                os.kill(workers[0], signal.SIGCONT)
            deadline = time.time() + 10
            while server.health() != 200 and time.time() < deadline:
                time.sleep(0.2)
            self.assertEqual(server.health(), 200)
            self.assertEqual(server.terminate(60), 0)


class QueueAndShutdown(unittest.TestCase):
    def test_queue_limit_then_sigterm_drains(self):
        queue_limit_and_shutdown(self)


def main():
    global ARGS, SERVER
    parser = argparse.ArgumentParser()
    parser.add_argument("--kvshrink", required=True)
    parser.add_argument("--mpirun", default="mpirun")
    parser.add_argument("--model", required=True)
    ARGS, rest = parser.parse_known_args()
    SERVER = ServeProcess(ARGS.kvshrink, ARGS.mpirun, ARGS.model, np=2, api_key=KEY,
                          extra=["--max-body-bytes", "256KiB", "--ctx-size", "2048"])
    try:
        SERVER.wait_ready()
        result = unittest.main(argv=[sys.argv[0], *rest], exit=False, verbosity=2).result
        code = SERVER.terminate(60)
        if code != 0:
            print("serve exited with", code, "\n", SERVER.output())
            sys.exit(1)
        sys.exit(0 if result.wasSuccessful() else 1)
    finally:
        if SERVER.proc.poll() is None:
            SERVER.proc.kill()


if __name__ == "__main__":
    main()
