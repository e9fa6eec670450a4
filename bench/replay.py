"""A near-zero-cost Klaviyo: recorded answers served from memory, for the hot-path and overhead benchmarks.

`python -m bench.replay --upstream URL` serves 127.0.0.1 (prints `base_url:`). A GET it has not seen yet is
fetched once from the upstream sandbox (same path, query and headers) and kept; every later GET of that
exact URL is answered from memory: one dictionary lookup and one socket write, no JSON work, so the
measured client, not the server, is the bottleneck. `POST /__replay/freeze` stops recording (unknown URLs
then answer 404 naming the URL), `GET /__replay/stats` counts hits, misses and bytes. Absolute links in a
recorded body (`links.next`) are rewritten from the upstream's base URL to the replay server's once, when
recorded, so every client (the bare loop too, which follows `links.next` as it is) reads every page here.

`ReplayProcess(upstream)` runs it as a child process (its CPU is reported next to every figure).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import psutil
import requests

from bench.sandbox_proc import ROOT, record_cpu, stop_child

FORWARDED = ("Authorization", "revision", "Accept")


class _Store:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.pages: dict[str, tuple[int, bytes, str]] = {}
        self.frozen = False
        self.hits = self.misses = self.bytes = 0
        self.lock = threading.Lock()
        self.session = requests.Session()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _answer(self, status: int, body: bytes, ctype: str = "application/vnd.api+json") -> None:
        head = (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.wfile.write(head + body)  # one write: no Nagle / delayed-ACK stall

    def do_GET(self) -> None:  # noqa: N802
        store: _Store = self.server.store  # type: ignore[attr-defined]
        if self.path.startswith("/__replay/stats"):
            self._answer(200, orjson.dumps({"pages": len(store.pages), "hits": store.hits, "misses": store.misses,
                                            "bytes": store.bytes, "frozen": store.frozen}), "application/json")
            return
        hit = store.pages.get(self.path)
        if hit is not None:
            store.hits += 1
            self._answer(hit[0], hit[1], hit[2])
            return
        if store.frozen:
            self._answer(404, orjson.dumps({"errors": [{"detail": f"not recorded: {self.path}"}]}))
            return
        headers = {k: self.headers[k] for k in FORWARDED if self.headers.get(k)}
        resp = store.session.get(store.upstream + self.path, headers=headers, timeout=120)
        own = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        body = resp.content.replace(store.upstream.encode(), own.encode())
        entry = (resp.status_code, body, resp.headers.get("Content-Type", "application/vnd.api+json"))
        with store.lock:
            store.misses += 1
            if resp.status_code == 200:
                store.pages[self.path] = entry
                store.bytes += len(resp.content)
        self._answer(*entry)

    def do_POST(self) -> None:  # noqa: N802
        store: _Store = self.server.store  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/__replay/freeze"):
            store.frozen = True
            self._answer(200, b'{"frozen": true}', "application/json")
            return
        self._answer(405, b'{"errors": [{"detail": "the replay server only reads"}]}')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.store = _Store(args.upstream)  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"base_url: http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


class ReplayProcess:
    """The replay server in a child process, recording from ``upstream`` until ``freeze()``."""

    def __init__(self, upstream: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.replay", "--upstream", upstream],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("base_url:"):
            self.stop()
            raise RuntimeError(f"replay server did not start: {line!r}")
        self.base_url = line.split(":", 1)[1].strip()
        self._ps = psutil.Process(self.proc.pid)

    def freeze(self) -> None:
        requests.post(f"{self.base_url}/__replay/freeze", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.base_url}/__replay/stats", timeout=10).json()

    def cpu_seconds(self) -> float:
        t = self._ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            record_cpu("replay", self._ps)
        stop_child(self.proc)

    def __enter__(self) -> ReplayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
