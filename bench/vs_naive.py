"""`vs_naive`: our profile throughput (records/s) divided by the Lakeflow seed's strategy (bench/naive.py).

Both read the same profiles (the ingest asset's pass: same window filter and fields) from one sandbox
enforcing Klaviyo's real tier shapes scaled in time by F (`scale:F`, F picked as in rate_limit.py). Our
client is told F; the naive loop's sleeps (0.15 s between pages, Retry-After on a 429) are scaled by F too,
so both run the shape they would run against Klaviyo, F times faster. Our figure counts the records of
the full steady windows after the first one (so the start-up burst allowance does not flatter it); the
naive loop never reaches a limit at 20 records per 0.15 s, so its rate is steady from the start.
Network latency is not scaled: against Klaviyo (~100 ms a page) the naive loop would be slower still.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import UTC, Figure, ratio
from bench.naive import NaiveStats, naive_pages
from bench.rate_limit import _calibrate, _pages_forever, choose_factor
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.tiers import STEADY_WINDOW_S
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, plan_passes
from klaviyo_dagster.ingest.windows import Window


def _ours(sb: SandboxProcess, factor: float, windows: int) -> dict[str, Any]:
    obj = get_object("profiles")
    w = STEADY_WINDOW_S * factor
    pages: list[tuple[float, int]] = []
    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=factor) as client:
        started = time.time()
        deadline = (math.floor(started / w) + windows + 1) * w + 0.05 * w
        sent = time.time()
        for data, _ in _pages_forever(client, obj):
            pages.append((sent, len(data)))
            sent = time.time()
            if sent >= deadline:
                break
        ended = time.time()
        stats = client.stats.snapshot()
    # Whole windows after the first whole one.
    first = math.ceil(started / w) + 1
    last = math.floor(ended / w) - 1
    counted = [n for t, n in pages if first <= int(t // w) <= last]
    seconds = (last - first + 1) * w
    return {"records_counted": sum(counted), "seconds_counted": seconds, "windows_counted": last - first + 1,
            "records_per_s": sum(counted) / seconds if seconds > 0 else None, "records_total": sum(n for _, n in pages),
            "duration_s": round(ended - started, 2), "requests": stats["requests"], "throttled_429": stats["throttled"],
            "page_size": obj.page_size}


def _naive(sb: SandboxProcess, window: Window, factor: float, seconds: float) -> dict[str, Any]:
    obj = get_object("profiles")
    one = next(iter(plan_passes(None, obj, window, FetchOptions())))  # profiles: one pass, no lookups
    params = {k: v for k, v in one.params.items() if k != "page[size]"}
    stats = NaiveStats()
    started = time.time()
    for _ in naive_pages(sb.base_url, sb.api_key, obj.path, params, time_scale=factor, stats=stats):
        if time.time() - started >= seconds:
            break
    elapsed = time.time() - started
    return {"records": stats.records, "seconds": round(elapsed, 3), "records_per_s": stats.records / elapsed,
            "requests": stats.requests, "throttled_429": stats.throttled, "slept_s": round(stats.slept_s, 3),
            "page_size": 20, "sleep_between_pages_s": 0.15 * factor,
            "latency_ms_per_page": (elapsed - stats.slept_s) / max(1, stats.requests) * 1000}


def run(quick: bool = False, windows: int = 2) -> list[Figure]:
    scale = "400000:1000"
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    window = Window(now - timedelta(days=400), now)
    with SandboxProcess(scale=scale) as sb:
        obj = get_object("profiles")
        cal = _calibrate(sb, obj, 20 if quick else 40)
        cost = (cal["server_cpu_ms_per_page"] + cal["client_cpu_ms_per_page"]) / 1000
        factor = choose_factor(obj.tier.steady, cost, cal["wall_ms_per_page"] / 1000)
        sb.set_rate_limits(f"scale:{factor:g}")
        ours = _ours(sb, factor, windows)
        sb.set_rate_limits(f"scale:{factor:g}")  # fresh windows for the naive loop
        naive = _naive(sb, window, factor, STEADY_WINDOW_S * factor)
    value = ratio(ours["records_per_s"] or 0.0, naive["records_per_s"])
    print(f"  vs naive: ours {ours['records_per_s']} rec/s, naive {naive['records_per_s']:.0f} rec/s (F={factor:g})",
          flush=True)
    # What the naive loop could reach with zero latency, in the same scaled time: 20 records per 0.15*F s.
    naive_bound = 20 / (0.15 * factor)
    return [Figure("vs_naive", value, 3.0, ">=", measurements={"ours": ours, "naive": naive, "calibration": cal,
                                                                "naive_zero_latency_records_per_s": naive_bound,
                                                                "ratio_vs_naive_zero_latency": ratio(ours["records_per_s"] or 0.0, naive_bound)},
                   settings={"sandbox_scale": scale, "factor": factor, "windows": windows, "object": "profiles"},
                   seconds=time.perf_counter() - t0,
                   note=f"profiles records/s, ours / seed loop (F={factor:g}); vs its zero-latency bound "
                        f"{ratio(ours['records_per_s'] or 0.0, naive_bound):.2f}")]
