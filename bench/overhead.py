"""`overhead`: rows/s of a whole events partition materialization / a bare fetch-and-decode loop.

Rate limits off. Both sides read recorded pages served from memory by bench/replay.py (a server that costs
next to nothing, so the denominator is not bound by the sandbox's CPU, as it was when both read the
sandbox itself); the measurement is hot_path's (see bench/hot_path.py). `bare_loop` (requests + orjson
following links.next) and `profile_materialization` (cProfile of one run) are shared helpers.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path
from typing import Any

import orjson
import requests

from bench.common import Figure, ratio
from bench.materialize import materialize_partition
from bench.sandbox_proc import SandboxProcess


def bare_loop(base_url: str, api_key: str, path: str, params: dict[str, str]) -> dict[str, Any]:
    """Fetch and decode every page of one pass; nothing else."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Klaviyo-API-Key {api_key}", "revision": "2026-07-15",
                            "Accept": "application/vnd.api+json"})
    url: str | None = base_url + path
    query: dict[str, str] | None = params
    rows = pages = 0
    started = time.perf_counter()
    while url:
        resp = session.get(url, params=query, timeout=60)
        resp.raise_for_status()
        doc = orjson.loads(resp.content)
        rows += len(doc["data"])
        pages += 1
        query = None
        url = (doc.get("links") or {}).get("next")
    session.close()
    return {"rows": rows, "pages": pages, "seconds": time.perf_counter() - started}


def profile_materialization(day: str, sb: SandboxProcess, db: str, top: int = 25) -> dict[str, Any]:
    """cProfile one materialization; the top functions by own time and by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    materialize_partition("events", day, sb.base_url, sb.api_key, db)
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime_s": round(tt, 3),
                     "cumtime_s": round(ct, 3), "tottime_share": round(tt / total, 4) if total else None})
    by_tt = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    by_ct = sorted((r for r in rows if "klaviyo_dagster" in r["function"] or True), key=lambda r: -r["cumtime_s"])
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return {"total_s": round(total, 3), "top_by_tottime": by_tt, "top_by_cumtime": by_ct[:top],
            "text": text.getvalue()[-6000:]}


def run(quick: bool = False, repeats: int = 2) -> list[Figure]:
    """The asset / bare ratio against the replay server (hot_path's measurement when it ran just before)."""
    from bench import hot_path

    t0 = time.perf_counter()
    rows_per_day = 40_000 if quick else 196_000
    m = dict(hot_path.LAST) if hot_path.LAST.get("rows_per_day") == rows_per_day else hot_path.measure(
        rows_per_day, repeats)
    asset_rps, bare_rps = m["asset_rows_per_s"], m["bare_rows_per_s"]
    print(f"  overhead: asset {asset_rps:,.0f} rows/s, bare {bare_rps:,.0f} rows/s (replay server CPU "
          f"{m['server_cpu_share']:.1%})", flush=True)
    return [Figure("overhead", ratio(asset_rps, bare_rps), 0.8, ">=",
                   measurements={"asset_rows_per_s": asset_rps, "bare_rows_per_s": bare_rps,
                                 "server_cpu_share": m["server_cpu_share"], "asset_runs": m["asset_runs"],
                                 "bare_runs": m["bare_runs"], "same_rows": m["bare"]["rows"] == m["asset"]["rows"],
                                 "load_avg_1_5_15": m["load_avg_1_5_15"]},
                   settings={"object": "events", "rows_per_day": rows_per_day, "page_size": 1000,
                             "server": "bench/replay.py (recorded pages from memory)", "rate_limits": "off"},
                   seconds=time.perf_counter() - t0,
                   note="events partition, asset rows/s / bare fetch+decode rows/s, both against recorded pages "
                        f"served from memory (server CPU {m['server_cpu_share']:.1%} of a core)")]
