"""A Klaviyo sandbox in its own process, so its CPU and memory are not the measured process's.

`SandboxProcess(scale=..., rate_limits=...)` starts `python -m klaviyo_dagster.sandbox --port 0` (the sandbox CLI) and reads
the base URL and API key it prints; admin calls (rate-limit mode, stats) go over HTTP; `stop()` ends
exactly that child process. Also a context manager.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent

# CPU seconds each server child (sandbox, replay) used, recorded when it stops: bench/run.py turns the sum
# over one benchmark into that benchmark's server CPU share (CPU seconds / the benchmark's wall seconds).
SERVER_CPU: list[tuple[str, float]] = []


def record_cpu(label: str, ps: psutil.Process) -> None:
    """Add the CPU seconds ``ps`` used so far to `SERVER_CPU` (nothing if it is gone already)."""
    try:
        t = ps.cpu_times()
    except psutil.Error:
        return
    SERVER_CPU.append((label, t.user + t.system))


def stop_child(proc: subprocess.Popen) -> None:
    """End exactly this child process (SIGTERM, then SIGKILL after 10 s) and close its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


class SandboxProcess:
    """One sandbox server in a child process."""

    def __init__(self, *, scale: str = "small", rate_limits: str = "off", seed: int = 42,
                 span_days: float = 30.0, start_timeout: float = 120.0, latency: str = "off",
                 page_cache_mb: float = 256.0) -> None:
        cmd = [sys.executable, "-m", "klaviyo_dagster.sandbox", "--port", "0", "--seed", str(seed), "--scale", scale,
               "--rate-limits", rate_limits, "--span-days", str(span_days), "--latency", latency,
               "--page-cache-mb", str(page_cache_mb)]
        self.scale, self.rate_limits = scale, rate_limits
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=ROOT,
                                     start_new_session=True)
        self.base_url = ""
        self.api_key = ""
        deadline = time.monotonic() + start_timeout
        assert self.proc.stdout is not None
        while not (self.base_url and self.api_key):
            line = self.proc.stdout.readline()
            if not line:
                self._stderr.seek(0)
                err = self._stderr.read()
                raise RuntimeError(f"sandbox process exited before it was ready: {err[-2000:]}")
            if line.startswith("base_url:"):
                self.base_url = line.split(":", 1)[1].strip()
            elif line.startswith("api_key:"):
                self.api_key = line.split(":", 1)[1].strip()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sandbox did not start within {start_timeout:.0f} s")
        self._ps = psutil.Process(self.proc.pid)

    def admin(self, method: str, name: str, body: Any = None) -> Any:
        """Call an admin route under /__sandbox/."""
        resp = requests.request(method, f"{self.base_url}/__sandbox/{name}", json=body, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def set_rate_limits(self, mode: str) -> None:
        self.admin("POST", "rate-limits", {"mode": mode})
        self.rate_limits = mode

    def set_latency(self, spec: str) -> None:
        self.admin("POST", "latency", {"latency": spec})

    def stats(self, reset: bool = False) -> dict[str, int]:
        """Requests served per operation (429s included); `reset` clears the counters after reading."""
        return self.admin("DELETE" if reset else "GET", "stats")["requests"]

    def cpu_seconds(self) -> float:
        """User + system CPU the sandbox process has used so far."""
        t = self._ps.cpu_times()
        return t.user + t.system

    def env(self) -> dict[str, str]:
        """Environment for a child that should talk to this sandbox."""
        return {**os.environ, "KLAVIYO_BASE_URL": self.base_url, "KLAVIYO_API_KEY": self.api_key}

    def stop(self) -> None:
        if getattr(self, "_ps", None) is not None and self.proc.poll() is None:
            record_cpu("sandbox", self._ps)
        stop_child(self.proc)
        self._stderr.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
