"""`rate_limit_utilisation`: how much of Klaviyo's per-endpoint rate limit the client actually uses.

Against a sandbox enforcing Klaviyo's real tier shapes scaled in time (`rate_limits="scale:F"`: a 1 s burst
window becomes F s, the 60 s steady window 60*F s, counts unchanged) and a client told the same factor,
each object's real ingest passes (`ingest.fetch.iter_pages`) are read for a little over N steady windows.
Every request's send time is recorded through a `requests` response hook; the figure is the requests
counted in each fixed steady window lying wholly inside the run, divided by the tier's steady limit,
and the share of requests answered 429.

F is chosen per object from a calibration: the CPU the sandbox and the client spend per page (measured,
limits off) times the steady rate must stay under `cpu_budget` of one core, so the sandbox, not the
client, is never the bottleneck. Events are read `events_page_size` records a page (not the asset's
1,000): a 1,000-event page costs the Python sandbox ~50 ms of CPU, and 3,500 of them a minute is more
than a 2-core machine serves; the limiter counts requests, not records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from bench.common import UTC, Figure, full_windows
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.tiers import STEADY_WINDOW_S
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, iter_pages
from klaviyo_dagster.ingest.objects import KlaviyoObject
from klaviyo_dagster.ingest.windows import Window

OBJECT_NAMES = ("profiles", "events", "flows")
F_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0)


def choose_factor(steady_limit: int, cpu_per_request_s: float, wall_per_request_s: float,
                  cpu_budget: float = 0.5, duty: float = 0.5, floor: float = 0.1) -> float:
    """The smallest F on the grid (>= floor) at which `steady_limit` requests per 60*F s cost at most
    `cpu_budget` of one core (sandbox + client CPU per request) and at most `duty` of the time of one
    sequential reader (wall time per request): the rate limit, not the machine, must be the bottleneck."""
    needed = steady_limit * max(cpu_per_request_s / cpu_budget, wall_per_request_s / duty) / STEADY_WINDOW_S
    for f in F_GRID:
        if f >= max(needed, floor):
            return f
    return float(math.ceil(max(needed, floor)))


def _object(name: str, events_page_size: int) -> KlaviyoObject:
    obj = get_object(name)
    if name == "events":
        from dataclasses import replace

        obj = replace(obj, page_size=events_page_size)
    return obj


def _pages_forever(client: KlaviyoClient, obj: KlaviyoObject) -> Iterator[tuple[list[dict], Any]]:
    """The object's ingest passes over the whole data range, started again when they run out."""
    now = datetime.now(UTC)
    window = Window(now - timedelta(days=400), now)
    while True:
        yield from iter_pages(client, obj, window, FetchOptions())


def _calibrate(sb: SandboxProcess, obj: KlaviyoObject, pages: int) -> dict[str, float]:
    """CPU per page of the sandbox and of this client, limits off."""
    sb.set_rate_limits("off")
    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=0) as client:
        it = _pages_forever(client, obj)
        next(it)  # connection set up, first page
        server0, client0, wall0 = sb.cpu_seconds(), time.process_time(), time.perf_counter()
        for _ in range(pages):
            next(it)
        wall = time.perf_counter() - wall0
        return {"pages": pages, "server_cpu_ms_per_page": (sb.cpu_seconds() - server0) / pages * 1000,
                "client_cpu_ms_per_page": (time.process_time() - client0) / pages * 1000,
                "wall_ms_per_page": wall / pages * 1000}


def measure_object(sb: SandboxProcess, obj: KlaviyoObject, factor: float, windows: int) -> dict[str, Any]:
    """Read `obj` under scale:F for `windows` full steady windows; per-window counts and 429 share."""
    steady_limit, burst_limit = obj.tier.steady, obj.tier.burst
    w = STEADY_WINDOW_S * factor
    sb.set_rate_limits(f"scale:{factor:g}")
    served0 = sb.stats().get(f"GET {obj.path}", 0)
    sends: list[float] = []
    statuses: list[int] = []

    def hook(resp: Any, *args: Any, **kwargs: Any) -> None:
        sends.append(time.time() - resp.elapsed.total_seconds())
        statuses.append(resp.status_code)

    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=factor) as client:
        client.session.hooks["response"].append(hook)
        started = time.time()
        # Start at a window boundary plus one window, so at least `windows` whole windows fit.
        deadline = (math.floor(started / w) + windows + 1) * w + 0.05 * w
        records = 0
        for data, _ in _pages_forever(client, obj):
            records += len(data)
            if time.time() >= deadline:
                break
        ended = time.time()
        stats = client.stats.snapshot()
    ok_sends = [t for t, s in zip(sends, statuses, strict=True) if s < 300]
    counts = full_windows(ok_sends, w, started, ended)
    all_counts = full_windows(sends, w, started, ended)
    burst_counts = full_windows(ok_sends, factor, started + w, ended)  # burst windows after the first steady one
    served = sb.stats().get(f"GET {obj.path}", 0) - served0
    utils = [c / steady_limit for c in counts]
    return {
        "object": obj.name,
        "tier": obj.tier.name,
        "page_size": obj.page_size,
        "factor": factor,
        "steady_window_s": w,
        "steady_limit": steady_limit,
        "burst_limit": burst_limit,
        "full_windows": len(counts),
        "requests_per_full_window": counts,
        "attempts_per_full_window": all_counts,
        "utilisation_per_window": [round(u, 4) for u in utils],
        "utilisation_mean": sum(utils) / len(utils) if utils else None,
        "utilisation_min": min(utils) if utils else None,
        "max_burst_window_count": max(burst_counts) if burst_counts else None,
        "requests": stats["requests"],
        "throttled_429": stats["throttled"],
        "share_429": stats["throttled"] / stats["requests"] if stats["requests"] else None,
        "sandbox_served": served,
        "records": records,
        "duration_s": round(ended - started, 2),
        "client_wait_s": stats["wait_seconds"],
        # Pacing (waiting in the limiter) vs throughput (the client never had to wait: CPU or server bound).
        "limited_by": "pacing" if stats["wait_seconds"] > 0.1 * (ended - started) else "throughput",
    }


def run(quick: bool = False, windows: int = 3, cpu_budget: float = 0.5, duty: float = 0.5,
        events_page_size: int = 50) -> list[Figure]:
    windows = 2 if quick else windows
    scale = "100000:300000" if quick else "400000:1000000"
    per_object: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with SandboxProcess(scale=scale) as sb:
        for name in OBJECT_NAMES:
            obj = _object(name, events_page_size)
            cal = _calibrate(sb, obj, 20 if quick else 40)
            cost = (cal["server_cpu_ms_per_page"] + cal["client_cpu_ms_per_page"]) / 1000
            factor = choose_factor(obj.tier.steady, cost, cal["wall_ms_per_page"] / 1000, cpu_budget, duty)
            result = measure_object(sb, obj, factor, windows)
            result["calibration"] = cal
            per_object[name] = result
            print(f"  rate limit {name}: F={factor:g} windows {result['requests_per_full_window']} / "
                  f"{obj.tier.steady}, 429s {result['throttled_429']}/{result['requests']}", flush=True)
    utils = {n: r["utilisation_mean"] for n, r in per_object.items()}
    shares = {n: r["share_429"] for n, r in per_object.items()}
    worst_util = min((u for u in utils.values() if u is not None), default=None)
    worst_share = max((s for s in shares.values() if s is not None), default=None)
    settings = {"sandbox_scale": scale, "windows": windows, "cpu_budget_per_core": cpu_budget, "duty": duty,
                "events_page_size": events_page_size, "objects": list(OBJECT_NAMES),
                "factor_rule": "smallest F on the grid (>= 0.1) with steady_limit * (server+client CPU per page) "
                               "<= cpu_budget * 60*F s and steady_limit * wall per page <= duty * 60*F s"}
    seconds = time.perf_counter() - started
    share = Figure("rate_limit_429_share", worst_share, 0.01, "<=", unit="share",
                   measurements={"share_429_by_object": shares}, settings=settings,
                   note="worst object: 429 answers / requests")
    return [Figure("rate_limit_utilisation", worst_util, 0.95, ">=",
                   measurements={"utilisation_by_object": utils, "per_object": per_object}, settings=settings,
                   extra=[share], seconds=seconds,
                   note="worst object: requests per full steady window / steady limit "
                        + ", ".join(f"{n} {u:.3f}" for n, u in utils.items() if u is not None))]
