"""The sandbox HTTP server: routing, auth, revision, rate limits, faults, admin routes.

Request path, in order: admin routes under `/__sandbox/` (no Klaviyo auth); the `Authorization:
Klaviyo-API-Key` check (401); the `revision` header (400 unless revisions.py serves it: missing,
malformed, unpublished, retired, newer than the spec); route resolution against the spec subset's operations
(404 unknown path, 405 wrong method); the rate limiter (429, `RateLimit-*` headers on every answer);
fault injection (status, reset, truncate, slow); query validation; the handler (or the page cache);
then the latency model's delay (latency.py), slept in the connection's thread before the answer is
written. Stdlib `ThreadingHTTPServer` (a thread per connection, so sleeping answers cost no CPU) with
HTTP/1.1 keep-alive, orjson bodies.

The page cache (`page_cache_mb`, off unless asked for; the CLI turns it on) keeps rendered answers of
collection reads by their exact URL, so re-reading a page costs a dictionary lookup instead of generating
a thousand events. It is bounded in bytes (least recently used answers go first), and emptied by any
request that may change data (every non-GET `/api/` call, every admin change, late-event releases); it is
bypassed while a bulk import job is still pending. Rate limits, faults and the recorder see cached answers
exactly like fresh ones.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from klaviyo_dagster.sandbox import revisions, routes
from klaviyo_dagster.sandbox.api import ReadApi, Request
from klaviyo_dagster.sandbox.compound import Compound
from klaviyo_dagster.sandbox.custom_metrics import CustomMetrics
from klaviyo_dagster.sandbox.faults import FaultInjector
from klaviyo_dagster.sandbox.generate import BaseData, parse_scale
from klaviyo_dagster.sandbox.ids import h
from klaviyo_dagster.sandbox.latency import LatencyModel
from klaviyo_dagster.sandbox.pagecache import PageCache
from klaviyo_dagster.sandbox.params import ApiError, parse_params
from klaviyo_dagster.sandbox.ratelimit import RateLimiter
from klaviyo_dagster.sandbox.reports import ReportApi
from klaviyo_dagster.sandbox.semantics import Semantics
from klaviyo_dagster.sandbox.store import Store
from klaviyo_dagster.sandbox.writes import WriteApi
from klaviyo_dagster.sandbox.writes_consent import ACCEPTED as CONSENT_ACCEPTED
from klaviyo_dagster.sandbox.writes_consent import ConsentWrites
from klaviyo_dagster.sandbox.writes_events import ACCEPTED as EVENTS_ACCEPTED
from klaviyo_dagster.sandbox.writes_events import EventWrites
from klaviyo_dagster.sandbox.writes_privacy import ACCEPTED as PRIVACY_ACCEPTED
from klaviyo_dagster.sandbox.writes_privacy import PrivacyWrites
from klaviyo_dagster.spec import load_subset

_log = logging.getLogger("klaviyo_dagster.sandbox")

MEDIA_TYPE = "application/vnd.api+json"
MAX_BODY = 64 * 1024 * 1024
ACCEPTED_EMPTY = EVENTS_ACCEPTED | CONSENT_ACCEPTED | PRIVACY_ACCEPTED


class Response:
    __slots__ = ("status", "body", "headers", "records")

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 records: int = 0) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.records = records  # resources in the answer (data + included): the latency model's size


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(doc), headers)


class SandboxServer:
    """One sandbox account served over HTTP on 127.0.0.1."""

    def __init__(self, seed: int = 42, scale: str = "small", rate_limits: str = "off", port: int = 0,
                 api_key: str | None = None, faults: str | None = None, now: float | None = None,
                 span_days: float = 30.0, late_release_after: float | None = None, recorder: Any = None,
                 latency: str | None = "off", page_cache_mb: float = 0.0, semantics: Any = None) -> None:
        self.semantics = Semantics(semantics)  # first: a bad spec fails before any work
        self.subset = load_subset()
        self.revision = self.subset["revision"]
        self.seed = seed
        profiles, events = parse_scale(scale)
        self._t0_wall = time.time() if now is None else float(now)
        self._t0_mono = time.monotonic()
        base = BaseData(seed=seed, n_profiles=profiles, n_events=events, now_ms=int(self._t0_wall * 1000),
                        span_ms=int(span_days * 86_400_000))
        self.store = Store(base, self.clock_ms)
        self.store.semantics = self.semantics
        self.api_key = api_key or default_api_key(seed)
        self.limiter = RateLimiter(rate_limits, self.subset)
        self._apply_limit_semantics({})
        self.semantics.subscribe(self._apply_limit_semantics)
        self.faults = FaultInjector(seed, faults)
        self.latency = LatencyModel(latency, seed)
        self.page_cache = PageCache(int(page_cache_mb * 2**20))
        self.recorder: Any = recorder if recorder is not None else _recorder_from_env()
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self.late_release_after = late_release_after
        self._http = _Server(("127.0.0.1", port), _Handler)
        self._http.sandbox = self  # type: ignore[attr-defined]
        self.port = self._http.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.reads = ReadApi(self.store, self.base_url)
        self.custom_metrics = CustomMetrics(self.reads, seed)
        self.compound = Compound(self.reads, self.custom_metrics, self.subset)
        self.writes = WriteApi(self.store, self.reads)
        self.more_writes = [cls(self.store, self.reads) for cls in (EventWrites, ConsentWrites, PrivacyWrites, ReportApi)]
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[Request], Any]] = self._handler_table()
        assert set(self._handlers) == set(routes.OPERATIONS), "every spec operation needs a handler"

    def _apply_limit_semantics(self, _changes: dict[str, Any]) -> None:
        """The rate-limit switches (header form, L tier steady limit) into the limiter."""
        self.limiter.configure(header_form=self.semantics.get("ratelimit_header_form"),
                               l_steady=int(self.semantics.get("ratelimit_l_steady")))

    # ---- clock and lifecycle --------------------------------------------------------------------------
    def clock_ms(self) -> int:
        """The sandbox's clock: the start time (or `now`) plus elapsed monotonic time."""
        return int((self._t0_wall + time.monotonic() - self._t0_mono) * 1000)

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self._http.serve_forever, name=f"klaviyo-sandbox-{self.port}",
                                        daemon=True, kwargs={"poll_interval": 0.1})
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart(self, downtime: float = 0.0) -> None:
        """Stop serving like a crashed server (listening socket closed, open keep-alive connections reset
        at their next request), stay down `downtime` seconds, then serve again on the same port with the
        same account state (data, writes, jobs, counters)."""
        self._http.stopped = True  # type: ignore[attr-defined]
        self.stop()
        time.sleep(downtime)
        self._http = _Server(("127.0.0.1", self.port), _Handler)
        self._http.sandbox = self  # type: ignore[attr-defined]
        self.start()

    def _maybe_auto_release(self) -> None:
        if self.late_release_after is not None and self.store.late_pending() > 0:
            if self.clock_ms() - self._t0_wall * 1000 >= self.late_release_after * 1000:
                self.store.release_late_events()
                self.page_cache.clear()

    def release_late_events(self, count: int | None = None) -> int:
        """Make late events visible (see Store.release_late_events); cached pages are dropped."""
        n = self.store.release_late_events(count)
        self.page_cache.clear()
        return n

    def delete_profile(self, profile_id: str) -> bool:
        """Delete a profile now, as a data-privacy deletion would (Store.delete_profile); False when unknown."""
        deleted = self.store.delete_profile(profile_id)
        self.page_cache.clear()
        return deleted

    def _cacheable(self, method: str, op_key: str) -> bool:
        """Whether this answer may come from (and go to) the page cache right now."""
        if not self.page_cache.enabled:
            return False
        if method != "GET":
            self.page_cache.clear()  # anything but a read may change data
            return False
        if op_key not in CACHED_OPERATIONS:
            return False
        if self.late_release_after is not None and self.store.late_pending() > 0:
            return False
        if self.store.deferred:  # an asynchronous write (event, consent, deletion) is still to take effect
            return False
        return not any(not job.applied for job in list(self.store.jobs.values()))

    # ---- dispatch -------------------------------------------------------------------------------------
    def _handler_table(self) -> dict[str, Callable[[Request], Any]]:
        r, w, cm = self.reads, self.writes, self.custom_metrics
        return {
            "GET /api/profiles": r.get_profiles, "GET /api/profiles/{id}": r.get_profile,
            "GET /api/events": r.get_events, "GET /api/events/{id}": r.get_event,
            "GET /api/metrics": r.get_metrics, "GET /api/metrics/{id}": r.get_metric,
            "GET /api/custom-metrics": cm.get_all, "GET /api/custom-metrics/{id}": cm.get_one,
            "GET /api/custom-metrics/{id}/metrics": lambda q: cm.get_metrics(q, False),
            "GET /api/custom-metrics/{id}/relationships/metrics": lambda q: cm.get_metrics(q, True),
            "GET /api/lists": lambda q: r.get_groups(q, "list"), "GET /api/lists/{id}": lambda q: r.get_group(q, "list"),
            "GET /api/segments": lambda q: r.get_groups(q, "segment"),
            "GET /api/segments/{id}": lambda q: r.get_group(q, "segment"),
            "GET /api/lists/{id}/profiles": lambda q: r.get_members(q, "list", False),
            "GET /api/lists/{id}/relationships/profiles": lambda q: r.get_members(q, "list", True),
            "GET /api/segments/{id}/profiles": lambda q: r.get_members(q, "segment", False),
            "GET /api/segments/{id}/relationships/profiles": lambda q: r.get_members(q, "segment", True),
            "GET /api/campaigns": r.get_campaigns, "GET /api/campaigns/{id}": r.get_campaign,
            "GET /api/flows": r.get_flows, "GET /api/flows/{id}": r.get_flow,
            "GET /api/templates": r.get_templates, "GET /api/templates/{id}": r.get_template,
            "GET /api/tags": r.get_tags, "GET /api/tags/{id}": lambda q: r.get_by_id(q, "tags", "tag"),
            "GET /api/campaign-messages/{id}": lambda q: r.get_by_id(q, "campaign_messages", "campaign-message"),
            "GET /api/flow-actions/{id}": lambda q: r.get_by_id(q, "flow_actions", "flow-action"),
            "GET /api/flow-actions/{id}/flow-messages": r.get_action_messages,
            "GET /api/flow-messages/{id}": lambda q: r.get_by_id(q, "flow_messages", "flow-message"),
            "POST /api/lists": w.create_list,
            "POST /api/lists/{id}/relationships/profiles": lambda q: w.change_members(q, add=True),
            "DELETE /api/lists/{id}/relationships/profiles": lambda q: w.change_members(q, add=False),
            "GET /api/profile-bulk-import-jobs": w.get_jobs,
            "POST /api/profile-bulk-import-jobs": w.create_job,
            "GET /api/profile-bulk-import-jobs/{job_id}": w.get_job,
            "GET /api/profile-bulk-import-jobs/{id}/import-errors": w.get_job_errors,
            "GET /api/profile-bulk-import-jobs/{id}/profiles": lambda q: w.get_job_profiles(q, False),
            "GET /api/profile-bulk-import-jobs/{id}/relationships/profiles": lambda q: w.get_job_profiles(q, True),
            "GET /api/profile-bulk-import-jobs/{id}/lists": lambda q: w.get_job_lists(q, False),
            "GET /api/profile-bulk-import-jobs/{id}/relationships/lists": lambda q: w.get_job_lists(q, True),
            **{op: fn for more in self.more_writes for op, fn in more.handlers().items()},
        }

    def count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def handle_api(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                   body: bytes, raw_query: str = "") -> tuple[Response, Any, str | None]:
        """Answer one /api/ request. Returns (response, fault or None, op_key)."""
        auth = headers.get("Authorization")
        if not auth:
            raise ApiError(401, "not_authenticated", "Missing Authorization header: send "
                           "'Authorization: Klaviyo-API-Key <your private key>'")
        if auth != f"Klaviyo-API-Key {self.api_key}":
            raise ApiError(401, "authentication_failed", "Incorrect authentication credentials: the "
                           "Authorization header must be 'Klaviyo-API-Key <private key>' with a valid key",
                           title="Incorrect authentication credentials.")
        try:
            revision = revisions.resolve(headers.get("revision"), self.clock_ms())
        except revisions.RevisionError as e:
            raise ApiError(400, "invalid", str(e), parameter="revision") from None
        op_key, ids = routes.match(method, path)
        self.count(op_key)
        decision = self.limiter.check(op_key, query, time.time())
        extra = dict(decision.headers or {})
        if not decision.allowed:
            err = decision.error or ApiError(429, "throttled", "Request was throttled.").error()
            return json_response(decision.status or 429, {"errors": [err]}, extra), None, op_key
        fault = self.faults.pick(op_key)
        if fault is not None and fault.kind == "status" and not fault.after_write:
            return self._fault_response(fault, extra), None, op_key
        if fault is not None and fault.kind == "reset" and not fault.after_write:
            return Response(502, b"", extra), fault, op_key  # never sent: the connection is reset unhandled
        if fault is not None and fault.kind == "slow":
            time.sleep(float(fault.delay or 0))
        cache_key = None
        generation = self.page_cache.generation
        if self._cacheable(method, op_key):
            cache_key = (op_key, path, raw_query, revision)  # answers differ by revision
            hit = self.page_cache.get(cache_key)
            if hit is not None:
                return Response(hit.status, hit.body, extra, hit.records), fault, op_key
        try:
            try:
                response = self._serve(op_key, ids, path, query, body, extra, revision)
            finally:
                if method != "GET":
                    self.page_cache.clear()  # again after the change: no page rendered meanwhile is kept
            if cache_key is not None and response.status == 200:
                self.page_cache.put(cache_key, Response(200, response.body, None, response.records), generation)
            if fault is not None and fault.kind == "status":  # NNN-after: handled, answer replaced
                return self._fault_response(fault, extra), None, op_key
            return response, fault, op_key
        except ApiError as e:
            e.headers = {**extra, **e.headers}  # RateLimit-* headers ride on errors too
            raise

    @staticmethod
    def _fault_response(fault: Any, extra: dict[str, str]) -> Response:
        """The answer of a status fault: its status with a JSON:API error body (429: Retry-After)."""
        status = int(fault.status)
        done = " after the request was handled" if fault.after_write else ""
        err = ApiError(status, "throttled" if status == 429 else "error",
                       f"injected fault: HTTP {status}{done} (sandbox fault injection)")
        if status == 429 and getattr(fault, "retry_after", 1):  # retry_after 0: no Retry-After at all
            extra.setdefault("Retry-After", str(getattr(fault, "retry_after", 1)))
        return json_response(status, err.doc(), extra)

    def _serve(self, op_key: str, ids: dict[str, str], path: str, query: dict[str, list[str]], body: bytes,
               extra: dict[str, str], revision: str | None = None) -> Response:
        self._maybe_auto_release()
        self.store.advance_jobs()
        params = parse_params(self.subset["operations"][op_key], query, op_key=op_key, revision=revision)
        req = Request(params=params, path=path.rstrip("/") + "/", ids=ids, body=body)
        result = self._handlers[op_key](req)
        if result is None:  # asynchronous writes answer 202 without a body, membership changes 204
            return Response(202 if op_key in ACCEPTED_EMPTY else 204, b"", extra)
        status = 201 if op_key == "POST /api/lists" else 202 if op_key.startswith("POST /api/profile-") else 200
        if params.include:
            result = self.compound.apply(result, params)  # linkage + included for every relationship asked for
        response = json_response(status, result, extra)
        data = result.get("data") if isinstance(result, dict) else None
        response.records = (len(data) if isinstance(data, list) else 1 if data else 0) + len(result.get("included") or ())
        return response

    # ---- admin ----------------------------------------------------------------------------------------
    def handle_admin(self, method: str, path: str, body: bytes) -> Response:
        try:
            return self._admin(method, path, body)
        finally:
            if method != "GET" and path[len("/__sandbox/"):].strip("/") not in ADMIN_KEEPS_DATA:
                self.page_cache.clear()  # other admin changes (late events, deletions, ...) may change data

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        name = path[len("/__sandbox/"):].strip("/")
        data: Any = {}
        if body:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                return json_response(400, {"error": "admin routes take a JSON body"})
        if method != "GET" and name not in ADMIN_KEEPS_DATA:
            self.page_cache.clear()
        if name == "latency" and method == "GET":
            return json_response(200, self.latency.describe())
        if name == "latency" and method in ("POST", "PUT"):
            spec = data.get("latency", data.get("mode")) if isinstance(data, dict) else data
            try:
                self.latency.set(None if spec is None else str(spec))
            except ValueError as e:
                return json_response(400, {"error": str(e)})
            return json_response(200, self.latency.describe())
        if name == "page-cache" and method == "GET":
            return json_response(200, self.page_cache.snapshot())
        if name == "stats":
            if method == "DELETE":
                with self._stats_lock:
                    self.stats.clear()
            with self._stats_lock:
                counts = dict(self.stats)
            return json_response(200, {"requests": counts, "late_events": {
                "released": self.store.late_released, "pending": self.store.late_pending()}})
        if name == "late-events" and method == "POST":
            count = data.get("count") if isinstance(data, dict) else None
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                return json_response(400, {"error": f"count must be a non-negative integer, got {count!r}"})
            n = self.release_late_events(count)
            return json_response(200, {"released": n, "pending": self.store.late_pending()})
        if name == "rate-limits" and method == "GET":
            return json_response(200, {"mode": getattr(self.limiter, "mode", None)})
        if name == "faults" and method == "GET":
            snapshot = getattr(self.faults, "snapshot", None)
            return json_response(200, snapshot() if snapshot else {})
        if name == "late-events" and method == "GET":
            return json_response(200, {"released": self.store.late_released, "pending": self.store.late_pending()})
        if name == "rate-limits" and method in ("POST", "PUT"):
            mode = data.get("mode") if isinstance(data, dict) else data
            try:
                self.limiter.set_mode(str(mode))
            except ValueError as e:
                return json_response(400, {"error": str(e)})
            return json_response(200, {"mode": str(mode)})
        if name == "faults" and method in ("POST", "PUT"):
            try:
                result = self.faults.configure(data if isinstance(data, dict) else {"spec": data})
            except ValueError as e:
                return json_response(400, {"error": str(e)})
            snapshot = getattr(self.faults, "snapshot", None)
            return json_response(200, result if result is not None else snapshot() if snapshot else {"ok": True})
        if name == "delete-profile" and method == "POST":
            pid = data.get("id") if isinstance(data, dict) else None
            if not isinstance(pid, str) or not pid:
                return json_response(400, {"error": 'send {"id": "<profile id>"}'})
            if not self.delete_profile(pid):
                return json_response(404, {"error": f"no profile with id {pid!r}"})
            return json_response(200, {"deleted": pid})
        if name == "semantics" and method == "GET":
            return json_response(200, self.semantics.snapshot())
        if name == "semantics" and method in ("POST", "PUT"):
            try:
                self.semantics.set(data if isinstance(data, dict) else str(data))
            except ValueError as e:
                return json_response(400, {"error": str(e)})
            return json_response(200, self.semantics.snapshot())
        if name == "health":
            return json_response(200, {"ok": True, "base_url": self.base_url})
        return json_response(404, {"error": f"unknown admin route {path}; see /__sandbox/health, stats, "
                                            "late-events, rate-limits, faults, latency, page-cache, semantics, delete-profile"})


def _recorder_from_env() -> Any:
    """The fidelity recorder when KLAVIYO_SANDBOX_RECORD=1 (see fidelity.py), else None."""
    try:
        from klaviyo_dagster.sandbox.fidelity import recorder_from_env
    except ImportError:
        return None
    return recorder_from_env()


def default_api_key(seed: int) -> str:
    """The deterministic private key a sandbox accepts when none is given: pk_ + 34 hex digits."""
    return "pk_" + "".join(f"{h(seed, 'api-key', k):016x}" for k in range(3))[:34]


# Admin routes whose changes leave the data as it was (rate limits and faults act before the page cache).
ADMIN_KEEPS_DATA = frozenset({"stats", "latency", "rate-limits", "faults", "page-cache", "health"})

# Collection reads whose answers depend only on the URL and the data (not on the clock): page-cacheable.
CACHED_OPERATIONS = frozenset({
    "GET /api/profiles", "GET /api/events", "GET /api/metrics", "GET /api/lists", "GET /api/segments",
    "GET /api/lists/{id}/profiles", "GET /api/lists/{id}/relationships/profiles",
    "GET /api/segments/{id}/profiles", "GET /api/segments/{id}/relationships/profiles",
    "GET /api/campaigns", "GET /api/flows", "GET /api/templates",
})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many concurrent clients (benchmarks) must not meet a full listen backlog

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (timeout, reset, killed process) is normal: one log line, not
        socketserver's traceback on stderr. Anything else is a sandbox bug and keeps the traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            host, port = (tuple(client_address) + (None, None))[:2]
            _log.warning("sandbox: client %s:%s dropped the connection (%s)", host, port, type(exc).__name__)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlaviyoSandbox/1.0"

    # TCP_NODELAY: headers and body go out in two writes, and Nagle's algorithm with the peer's delayed ACK
    # would stall every keep-alive response by ~40 ms (a 50-flow page: 46 ms -> 1.4 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
        return

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        sandbox: SandboxServer = self.server.sandbox  # type: ignore[attr-defined]
        if getattr(self.server, "stopped", False):  # a connection that outlived its (re)started server
            self._reset()
            return
        split = urlsplit(self.path)
        path = split.path
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            self.close_connection = True
            self._send(json_response(413, ApiError(413, "too_large", f"request body of {length} bytes is too "
                                                   "large").doc()))
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/__sandbox/") or path == "/__sandbox":
            try:
                self._send(sandbox.handle_admin(method, path, body))
            except Exception as e:  # noqa: BLE001 - an admin bug must still answer
                self._send(json_response(500, {"error": f"{type(e).__name__}: {e}"}))
            return
        query = parse_qs(split.query, keep_blank_values=True)
        fault = None
        op_key = None
        try:
            response, fault, op_key = sandbox.handle_api(method, path, query, self.headers, body, split.query)
        except ApiError as e:
            response = json_response(e.status, e.doc(), e.headers)
        except Exception as e:  # a sandbox bug must still answer like a server, not hang the client
            response = json_response(500, ApiError(500, "error", f"sandbox internal error: {type(e).__name__}: {e}").doc())
        unhandled = fault is not None and fault.kind == "reset" and not fault.after_write
        if sandbox.recorder is not None and not unhandled:
            key = op_key or routes.op_key_or_unmatched(method, path)
            sandbox.recorder.record(key, method, response.status, response.body, query)
        delay = sandbox.latency.delay(method, response.status, response.records)
        if delay > 0:
            response.headers = {**response.headers, "X-Sandbox-Latency-Ms": f"{delay * 1000:.1f}"}
            # The whole answer takes `delay`: the time spent building it counts. Sleeping costs no CPU.
            left = delay - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind == "truncate":
            self._send(response, truncate=float(getattr(fault, "fraction", 0.5)))
            return
        self._send(response)

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, response: Response, truncate: float | None = None) -> None:
        """Send a response; with `truncate`, only that fraction of the body (Content-Length stays full)."""
        try:
            self.send_response(response.status)
            if response.status != 204:
                self.send_header("Content-Type", MEDIA_TYPE)
            body = response.body
            if response.status != 204:
                self.send_header("Content-Length", str(len(body)))
            if truncate is not None:
                body = body[: min(len(body) - 1, int(len(body) * truncate))] if body else body
            for k, v in response.headers.items():
                self.send_header(k, v)
            if truncate is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if response.status != 204:
                self.wfile.write(body)
            self.wfile.flush()
            if truncate is not None:
                self._reset()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")
