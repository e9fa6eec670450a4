"""`hot_path`: rows/s the `klaviyo/events` asset lands against a server that costs next to nothing.

A sandbox (child process) generates one events partition (~196k events, 1,000 a page); a replay server
(bench/replay.py, another child) records every page the first bare loop and the first (untimed)
materialization ask for, then is frozen and serves them from memory. Then bare loops (`requests` +
`orjson` following `links.next`: fetch and decode, nothing else) and materializations of the real asset
(in-process through Dagster: fetch with concurrent chains, flatten, stage, swap into DuckDB, checks)
alternate; each side keeps its fastest run. Figures: the asset's rows/s (the whole in-process Dagster run's
wall time: run start, fetch, flatten, stage, swap, checks) against Klaviyo's top tier
(3,500 pages of 1,000 a minute = 58,333 events/s), and its ratio to the bare loop. The replay server's
CPU share (CPU seconds / wall seconds while measuring) is reported: near 0 means it was not the bottleneck.
Each run also records the CPU seconds the measuring process used (`cpu_s`) and the load average: on a
shared machine a run's wall time is its CPU time plus the time it waited for a core.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import UTC, Figure, ratio
from bench.materialize import materialize_partition, quiet_dagster
from bench.overhead import bare_loop
from bench.replay import ReplayProcess
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, plan_passes
from klaviyo_dagster.ingest.windows import Window, parse_partition_key

TOP_TIER_ROWS_PER_S = 3500 * 1000 / 60


def _cpu() -> float:
    """CPU seconds this process has used (all threads, DuckDB's included)."""
    t = os.times()
    return t.user + t.system


LAST: dict[str, Any] = {}  # the last measurement, reused by `overhead` in the same bench run


def measure(rows_per_day: int, repeats: int) -> dict[str, Any]:
    """Bare and asset runs against the replay server; the raw runs and the best of each."""
    quiet_dagster()
    scale = f"2000:{rows_per_day * 2}"
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    start = parse_partition_key(day)
    obj = get_object("events")
    one = next(iter(plan_passes(None, obj, Window(start, start + timedelta(days=1)), FetchOptions())))
    bare_runs: list[dict[str, Any]] = []
    asset_runs: list[dict[str, Any]] = []
    with (SandboxProcess(scale=scale, span_days=2) as sb, ReplayProcess(sb.base_url) as rp,
          tempfile.TemporaryDirectory() as tmp):
        bare_loop(rp.base_url, sb.api_key, one.path, dict(one.params))  # record the chain's pages
        materialize_partition("events", day, rp.base_url, sb.api_key, f"{tmp}/warm.duckdb")  # and the asset's
        rp.freeze()
        recorded = rp.stats()
        cpu0, wall0 = rp.cpu_seconds(), time.perf_counter()
        for i in range(repeats):
            c0 = _cpu()
            bare_runs.append(bare_loop(rp.base_url, sb.api_key, one.path, dict(one.params)))
            bare_runs[-1]["cpu_s"] = round(_cpu() - c0, 3)
            c0 = _cpu()
            r = materialize_partition("events", day, rp.base_url, sb.api_key, f"{tmp}/w{i}.duckdb")
            md = r["metadata"]
            api = md.get("api") or {}
            asset_runs.append({"rows": r["rows"], "seconds": r["seconds"], "pages": api.get("pages"),
                               "requests": api.get("requests"), "cpu_s": round(_cpu() - c0, 3),
                               "load_1": round(os.getloadavg()[0], 2)})
        server_share = (rp.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        after = rp.stats()
    bare = min(bare_runs, key=lambda r: r["seconds"])
    asset = min(asset_runs, key=lambda r: r["seconds"])
    LAST.clear()
    LAST.update({"bare": bare, "asset": asset, "bare_runs": bare_runs, "asset_runs": asset_runs,
            "bare_rows_per_s": bare["rows"] / bare["seconds"], "asset_rows_per_s": asset["rows"] / asset["seconds"],
            "server_cpu_share": round(server_share, 4), "recorded": recorded,
            "misses_after_freeze": after["misses"] - recorded["misses"], "day": day, "scale": scale,
            "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()], "rows_per_day": rows_per_day})
    return dict(LAST)


def run(quick: bool = False, repeats: int = 3) -> list[Figure]:
    t0 = time.perf_counter()
    rows_per_day = 40_000 if quick else 196_000
    m = measure(rows_per_day, 2 if quick else repeats)
    asset_rps, bare_rps = m["asset_rows_per_s"], m["bare_rows_per_s"]
    print(f"  hot path: asset {asset_rps:,.0f} rows/s, bare {bare_rps:,.0f} rows/s, replay server CPU "
          f"{m['server_cpu_share']:.1%}, load {m['load_avg_1_5_15']}", flush=True)
    settings = {"object": "events", "rows_per_day": rows_per_day, "page_size": 1000, "repeats": repeats,
                "server": "bench/replay.py (recorded pages from memory)", "rate_limits": "off"}
    share = m["server_cpu_share"]
    best, bare = m["asset"], m["bare"]
    per_cpu = best["rows"] / best["cpu_s"] if best.get("cpu_s") else None
    cpu_note = (f"; fastest asset run: {best['seconds']:.2f} s wall, {best['cpu_s']:.2f} CPU s "
                f"({per_cpu:,.0f} rows per CPU second), bare loop {bare['cpu_s']:.2f} CPU s") if per_cpu else ""
    vs_bare = Figure("hot_path_vs_bare", ratio(asset_rps, bare_rps), 0.9, ">=", measurements=m, settings=settings,
                     note=f"asset rows/s / bare fetch+decode rows/s (replay server CPU {share:.1%} of a core)")
    return [Figure("hot_path", asset_rps, TOP_TIER_ROWS_PER_S, ">=", unit="rows/s",
                   measurements={"asset_rows_per_s": asset_rps, "bare_rows_per_s": bare_rps,
                                 "vs_top_tier": ratio(asset_rps, TOP_TIER_ROWS_PER_S), "server_cpu_share": share,
                                 "load_avg_1_5_15": m["load_avg_1_5_15"]},
                   settings=settings, extra=[vs_bare], seconds=time.perf_counter() - t0,
                   note=f"events asset rows/s against recorded pages (top tier 58,333/s; replay server CPU "
                        f"{share:.1%} of a core; load {m['load_avg_1_5_15'][0]}){cpu_note}")]
