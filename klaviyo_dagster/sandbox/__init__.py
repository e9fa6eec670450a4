"""The Klaviyo sandbox: a local HTTP server speaking Klaviyo's JSON:API, for tests, demos and CI.

    with run_sandbox(seed=42, scale="small") as sb:
        requests.get(f"{sb.base_url}/api/profiles/", headers={
            "Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"})

`run_sandbox` starts the server in a thread on 127.0.0.1 and yields a `SandboxHandle` (base_url, api_key,
faults, set_rate_limits, set_latency, set_semantics, release_late_events, truth, stats, stop). The sandbox imports nothing from the
client, ingest, activate or warehouse packages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from klaviyo_dagster.sandbox.semantics import parse_semantics
from klaviyo_dagster.sandbox.server import SandboxServer, default_api_key
from klaviyo_dagster.sandbox.truth import Truth

__all__ = ["SandboxHandle", "run_sandbox", "default_api_key"]


class SandboxHandle:
    """Control and ground truth for a running sandbox."""

    def __init__(self, server: SandboxServer) -> None:
        self._server = server
        self.base_url: str = server.base_url
        self.api_key: str = server.api_key
        self.port: int = server.port
        self.seed: int = server.seed
        self.faults = server.faults
        self.truth = Truth(server.store, server.reads)

    def __repr__(self) -> str:  # never show the key
        return f"SandboxHandle(base_url={self.base_url!r})"

    @property
    def limiter(self) -> Any:
        return self._server.limiter

    def set_rate_limits(self, mode: str) -> None:
        """Switch rate limiting: 'off', 'real' or 'scale:F'."""
        self._server.limiter.set_mode(mode)

    def set_latency(self, spec: str | None) -> None:
        """Switch the latency model: 'off', 'realistic' or e.g. '150ms+0.1ms/record' (see sandbox/latency.py)."""
        self._server.latency.set(spec)

    @property
    def latency(self) -> str:
        """The latency spec in force."""
        return self._server.latency.spec.text

    def page_cache_stats(self) -> dict[str, int]:
        """Page cache counters (hits, misses, pages, bytes, evictions)."""
        return self._server.page_cache.snapshot()

    def release_late_events(self, count: int | None = None) -> int:
        """Make late-arriving events visible (all pending ones, or the next `count`); returns how many."""
        return self._server.release_late_events(count)

    def delete_profile(self, profile_id: str) -> bool:
        """Delete a profile at once, with its memberships, consent and events, as Klaviyo's data-privacy
        deletion does (also `POST /__sandbox/delete-profile {"id": ...}`); False when there is none."""
        return self._server.delete_profile(profile_id)

    @property
    def semantics(self) -> Any:
        """The switches for behaviours Klaviyo leaves open (`sandbox/semantics.py`)."""
        return self._server.semantics

    def set_semantics(self, spec: str | Mapping[str, Any] | None = None, **switches: Any) -> dict[str, Any]:
        """Set switches ("k=v,k=v", a mapping, or keywords); returns the previous values (ValueError if unknown)."""
        changes = dict(parse_semantics(spec))
        changes.update(parse_semantics(switches))
        return self._server.semantics.set(changes)

    @contextmanager
    def semantics_override(self, spec: str | Mapping[str, Any] | None = None, **switches: Any) -> Iterator[None]:
        """Set switches for a `with` block, then restore their previous values."""
        previous = self.set_semantics(spec, **switches)
        try:
            yield
        finally:
            self._server.semantics.set(previous)

    def set_import_job_delay(self, seconds: float) -> None:
        """Make bulk import jobs created from now on take `seconds` longer to complete (0 restores).

        Same as `set_semantics(import_job_seconds=0.3 + seconds)`."""
        self.set_semantics(import_job_seconds=0.3 + float(seconds))

    def late_events_pending(self) -> int:
        return self._server.store.late_pending()

    def stats(self) -> dict[str, int]:
        """Requests served per operation (e.g. {"GET /api/profiles": 12})."""
        with self._server._stats_lock:
            return dict(self._server.stats)

    def reset_stats(self) -> None:
        with self._server._stats_lock:
            self._server.stats.clear()

    @property
    def recorder(self) -> Any:
        return self._server.recorder

    @recorder.setter
    def recorder(self, value: Any) -> None:
        """An object with record(op_key, status, body_bytes, query), called for every /api/ answer."""
        self._server.recorder = value

    def now_ms(self) -> int:
        """The sandbox clock (epoch ms)."""
        return self._server.clock_ms()

    def restart(self, downtime: float = 0.0) -> None:
        """Stop the server as if it crashed (connections refused, open ones reset), `downtime` seconds
        later serve again on the same port with the same account state."""
        self._server.restart(downtime)

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def run_sandbox(seed: int = 42, scale: str = "small", rate_limits: str = "off", port: int = 0,
                api_key: str | None = None, faults: str | None = None, *, now: float | None = None,
                span_days: float = 30.0, late_release_after: float | None = None,
                recorder: Any = None, latency: str | None = "off", page_cache_mb: float = 0.0,
                semantics: str | Mapping[str, Any] | None = None) -> Iterator[SandboxHandle]:
    """Start a sandbox in-process on 127.0.0.1 (port 0 = a free port) and stop it on exit.

    `now` (epoch seconds) pins the sandbox clock's start (the data ends a minute before it);
    `late_release_after` releases the late events automatically that many seconds after start;
    `recorder` (a fidelity.ResponseRecorder) sees every /api/ answer (default: from KLAVIYO_SANDBOX_RECORD);
    `latency` holds each answer as long as Klaviyo would take ('off', 'realistic', '150ms+0.1ms/record');
    `page_cache_mb` keeps rendered collection pages by URL (0 = off) so re-reads cost no generation;
    `semantics` ("k=v,k=v" or a mapping) sets the switches for behaviours Klaviyo leaves open (semantics.py;
    unknown names or values raise ValueError).
    """
    server = SandboxServer(seed=seed, scale=scale, rate_limits=rate_limits, port=port, api_key=api_key,
                           faults=faults, now=now, span_days=span_days, late_release_after=late_release_after,
                           recorder=recorder, latency=latency, page_cache_mb=page_cache_mb, semantics=semantics)
    server.start()
    handle = SandboxHandle(server)
    try:
        yield handle
    finally:
        server.stop()
