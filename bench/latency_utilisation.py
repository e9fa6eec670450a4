"""`latency_utilisation`: share of Klaviyo's rate limits ingest reaches when answers take as long as Klaviyo's.

A sandbox (child process) with Klaviyo's real tier shapes (`--rate-limits real`: 1 s burst and 60 s steady
windows, real counts) and `--latency realistic` (reads 200 ms + 0.1 ms/record, log-normal tail: a
1,000-event page ~300 ms median). Profiles (L, 100 a page), events (XL, 1,000 a page) and flows (S, 50 a
page) are read at once, each by its own client (real pacing, `max_concurrency` chains), looping its
ingest passes (`ingest.fetch.iter_pages`: fan-out + sub-windows) over a fixed window for `windows` full
steady windows; two loops per object run side by side so one pass's draining tail overlaps the next.
Each loop does the asset's own work on what it reads, not only the fetch: pages come raw (`raw=True`)
and are flattened and staged chunk by chunk into a `StagingArea` (DuckDB parses and unnests them), a
fresh one per pass of the window (one partition's staging, as a materialization has it; the final swap
into the warehouse is left out), so the reader's CPU is the asset's.

Before measuring, one read of each window with latency and limits off fills the sandbox's page cache: a
1,000-event page costs ~50 ms of CPU to generate and 3,500 a minute would take more than the machine, so
the measured reads are served from the cache (the sandbox's CPU share while measuring is reported).
Figure: requests sent in each fixed 60 s window lying wholly inside the run / the tier's steady limit
(worst object), and the share of requests answered 429.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from bench.common import Figure, full_windows
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.tiers import STEADY_WINDOW_S
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, iter_pages
from klaviyo_dagster.ingest.flatten import Flattener
from klaviyo_dagster.ingest.windows import Window, day_start
from klaviyo_dagster.warehouse.staging import StagingArea

OBJECT_NAMES = ("profiles", "events", "flows")


def windows_for(first: datetime, last: datetime) -> dict[str, Window]:
    """The fixed window each object loops over: events one full day, the others the whole range."""
    whole = Window(day_start(first), last + timedelta(seconds=1))
    day = day_start(last) - timedelta(days=1)
    return {"profiles": whole, "events": Window(day, day + timedelta(days=1)), "flows": whole}


def staged_forever(client: KlaviyoClient, name: str, window: Window, directory: str) -> Iterator[int]:
    """Read ``window`` again and again as the asset does (raw pages, flattened and staged chunk by chunk,
    a fresh staging area per pass); yields the rows of each staged chunk."""
    obj = get_object(name)
    while True:
        flat = (Flattener(obj, window=window) if obj.incremental
                else Flattener(obj, partition=day_start(datetime.now(window.start.tzinfo))))
        with StagingArea(obj.sql_columns(), directory=directory) as area:
            for chunk in flat.chunks(iter_pages(client, obj, window, FetchOptions(), raw=flat.reads_raw)):
                yield area.append(chunk)


def utilisation(sends: list[tuple[float, int]], steady_limit: int, started: float, ended: float) -> dict[str, Any]:
    """Per full steady window: successful sends / limit; and the 429 share of all answers."""
    ok = [t for t, s in sends if s < 300]
    counts = full_windows(ok, STEADY_WINDOW_S, started, ended)
    utils = [c / steady_limit for c in counts]
    throttled = sum(1 for _, s in sends if s == 429)
    return {"requests_per_full_window": counts, "utilisation_per_window": [round(u, 4) for u in utils],
            "utilisation_mean": sum(utils) / len(utils) if utils else None,
            "answers": len(sends), "throttled_429": throttled,
            "share_429": throttled / len(sends) if sends else None}


def deadline_for(started: float, windows: int, window_s: float = STEADY_WINDOW_S) -> float:
    """When to stop so that `windows` whole fixed windows lie inside [started, deadline]."""
    return (math.floor(started / window_s) + windows + 1) * window_s + 0.5


def _reader(inbox: Any, base_url: str, api_key: str, name: str, window: Window, started: float, deadline: float,
            max_concurrency: int, loops: int) -> None:
    """Child process: read ``name``'s window in ``loops`` loops until ``deadline``; put the counts in ``inbox``."""
    sends: list[tuple[float, int]] = []
    lock = threading.Lock()

    def hook(resp: Any, *args: Any, **kwargs: Any) -> None:
        with lock:
            sends.append((time.time() - resp.elapsed.total_seconds(), resp.status_code))

    with KlaviyoClient(api_key, base_url=base_url, rate_limit_scale=1.0, max_concurrency=max_concurrency) as client:
        client.session.hooks["response"].append(hook)
        records = [0]

        tmp = tempfile.mkdtemp(prefix=f"latency_{name}_")

        def loop() -> None:
            it = staged_forever(client, name, window, tmp)
            try:
                for rows in it:
                    records[0] += rows
                    if time.time() >= deadline:
                        break
            finally:
                it.close()

        cpu0 = time.process_time()
        threads = [threading.Thread(target=loop, daemon=True) for _ in range(loops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        shutil.rmtree(tmp, ignore_errors=True)
        stats, pool = client.stats.snapshot(), client.pool.snapshot()
    ended = time.time()
    obj = get_object(name)
    with lock:
        out = utilisation(list(sends), obj.tier.steady, started, ended)
    out.update({"tier": obj.tier.name, "steady_limit": obj.tier.steady, "page_size": obj.page_size,
                "records": records[0], "client_wait_s": stats["wait_seconds"], "pool": pool,
                "client_cpu_share": round((time.process_time() - cpu0) / (ended - started), 4),
                "window": window.as_dict()})
    inbox.put((name, out))


def measure(sb: SandboxProcess, windows: int, max_concurrency: int, loops: int = 2) -> dict[str, Any]:
    # The data range: the first and last event (events span the whole range).
    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=0) as probe:
        ends = [probe.get("/api/events", {"sort": order, "page[size]": "1"})["data"][0]["attributes"]["datetime"]
                for order in ("datetime", "-datetime")]
    wins = windows_for(*(datetime.fromisoformat(e) for e in ends))
    # Warm the page cache: one read of every window, limits and latency off.
    warm: dict[str, float] = {}
    for name in OBJECT_NAMES:
        t0 = time.perf_counter()
        with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=0, max_concurrency=max_concurrency) as c:
            for _ in iter_pages(c, get_object(name), wins[name], FetchOptions()):
                pass
        warm[name] = round(time.perf_counter() - t0, 2)
    sb.set_rate_limits("real")
    sb.set_latency("realistic")
    sb.stats(reset=True)
    started = time.time()
    deadline = deadline_for(started, windows)
    cpu0 = sb.cpu_seconds()
    # One process per object: each reader has its own interpreter (decoding 1,000-event pages at the top
    # tier takes most of a core), as separate Dagster runs would.
    ctx = multiprocessing.get_context("fork")
    inbox: Any = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(inbox, sb.base_url, sb.api_key, n, wins[n], started, deadline,
                                                max_concurrency, loops), daemon=True) for n in OBJECT_NAMES]
    for proc in procs:
        proc.start()
    results: dict[str, Any] = {}
    for _ in procs:
        name, out = inbox.get(timeout=deadline - time.time() + 120)
        results[name] = out
    for proc in procs:
        proc.join(timeout=30)
    ended = time.time()
    server_share = (sb.cpu_seconds() - cpu0) / (ended - started)
    return {"per_object": results, "sandbox_cpu_share": round(server_share, 4), "warm_s": warm,
            "duration_s": round(ended - started, 1), "page_cache": sb.admin("GET", "page-cache"),
            "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def run(quick: bool = False, windows: int = 2, max_concurrency: int = 32) -> list[Figure]:
    t0 = time.perf_counter()
    windows = 1 if quick else windows
    scale = "20000:100000" if quick else "30000:400000"
    with SandboxProcess(scale=scale, span_days=2, page_cache_mb=1536) as sb:
        m = measure(sb, windows, max_concurrency)
    per = m["per_object"]
    utils = {n: r["utilisation_mean"] for n, r in per.items()}
    shares = {n: r["share_429"] for n, r in per.items()}
    for n, r in per.items():
        print(f"  latency {n}: windows {r['requests_per_full_window']} / {r['steady_limit']}, 429s "
              f"{r['throttled_429']}/{r['answers']}, peak chains {r['pool']['peak_running']}", flush=True)
    print(f"  sandbox CPU {m['sandbox_cpu_share']:.1%} of a core, load {m['load_avg_1_5_15']}", flush=True)
    worst = min((u for u in utils.values() if u is not None), default=None)
    worst_share = max((s for s in shares.values() if s is not None), default=None)
    settings = {"sandbox_scale": scale, "latency": "realistic", "rate_limits": "real", "windows": windows,
                "max_concurrency": max_concurrency, "loops_per_object": 2, "objects": list(OBJECT_NAMES)}
    share = Figure("latency_429_share", worst_share, 0.01, "<=", unit="share",
                   measurements={"share_429_by_object": shares}, settings=settings,
                   note="worst object: 429 answers / answers, latency realistic")
    return [Figure("latency_utilisation", worst, 0.9, ">=",
                   measurements={"utilisation_by_object": utils, **m}, settings=settings, extra=[share],
                   seconds=time.perf_counter() - t0,
                   note="latency realistic, real tiers: requests per full 60 s window / steady limit (worst) "
                        + ", ".join(f"{n} {u:.3f}" for n, u in utils.items() if u is not None)
                        + f"; sandbox CPU {m['sandbox_cpu_share']:.1%} of a core")]
