"""A real `kvshrink serve` under mpirun for the HTTP tests: starts it on a free port, waits for
/health, and stops it with SIGTERM to rank 0 (whose pid it prints)."""
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request


class ServeProcess:
    def __init__(self, kvshrink, mpirun, model, np=2, extra=(), api_key=None, env=None):
        self.api_key = api_key
        cmd = [mpirun, "--oversubscribe", "-np", str(np), kvshrink, "serve", "--model", model,
               "--port", "0", *extra]
        if api_key:
            cmd += ["--api-key", api_key]
        full_env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                        **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env)
        self.lines = []
        self.port = None
        self.rank0_pid = None
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                if m := re.search(r"http://[\d.]+:(\d+)/health .* pid (\d+)", line):
                    self.port, self.rank0_pid = int(m.group(1)), int(m.group(2))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        with self._seen:
            return "".join(self.lines)

    def wait_listening(self, timeout=60):
        deadline = time.time() + timeout
        with self._seen:
            while self.port is None:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("serve did not start:\n" + "".join(self.lines))
                self._seen.wait(1)

    def health(self):
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def wait_ready(self, timeout=120):
        self.wait_listening()
        deadline = time.time() + timeout
        while self.health() != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("serve did not get ready:\n" + self.output())
            time.sleep(0.2)

    def metrics(self):
        req = urllib.request.Request(self.base_url + "/metrics")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def terminate(self, timeout=60):
        """SIGTERM to rank 0; returns mpirun's exit code."""
        if self.proc.poll() is None and self.rank0_pid:
            os.kill(self.rank0_pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.terminate(30)
            except Exception:
                self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
