"""`overhead`: rows/s of a whole events partition materialization / a bare fetch-and-decode loop.

Rate limits off (sandbox `off`, client `rate_limit_scale=0`). The materialization is the real asset run
in-process through Dagster (fetch, flatten, stage, swap into DuckDB, checks); the bare loop is
`requests` + `orjson` over exactly the same pages (the asset's pass: same filter and page size). Runs
alternate (bare, asset, bare, asset, ...) and each side keeps its fastest, to damp the noise of a shared
machine. Then one more materialization runs under cProfile (not timed) and its top functions are kept.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import requests

from bench.common import UTC, Figure, ratio
from bench.materialize import materialize_partition, quiet_dagster
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, plan_passes
from klaviyo_dagster.ingest.windows import Window, parse_partition_key


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
    quiet_dagster()
    rows_per_day = 40_000 if quick else 150_000
    scale = f"2000:{rows_per_day * 2}"
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    start = parse_partition_key(day)
    obj = get_object("events")
    one = next(iter(plan_passes(None, obj, Window(start, start + timedelta(days=1)), FetchOptions())))
    t0 = time.perf_counter()
    bare_runs: list[dict[str, Any]] = []
    asset_runs: list[dict[str, Any]] = []
    with SandboxProcess(scale=scale, span_days=2) as sb, tempfile.TemporaryDirectory() as tmp:
        bare_loop(sb.base_url, sb.api_key, one.path, dict(one.params))  # warm the sandbox's caches
        for i in range(repeats):
            bare_runs.append(bare_loop(sb.base_url, sb.api_key, one.path, dict(one.params)))
            r = materialize_partition("events", day, sb.base_url, sb.api_key, f"{tmp}/w{i}.duckdb")
            asset_runs.append({k: r[k] for k in ("rows", "seconds")} | {"pages": r["metadata"].get("api", {}).get("pages")})
        profile = profile_materialization(day, sb, f"{tmp}/profiled.duckdb")
    bare = min(bare_runs, key=lambda r: r["seconds"])
    asset = min(asset_runs, key=lambda r: r["seconds"])
    bare_rps, asset_rps = bare["rows"] / bare["seconds"], asset["rows"] / asset["seconds"]
    value = ratio(asset_rps, bare_rps)
    print(f"  overhead: asset {asset_rps:,.0f} rows/s, bare {bare_rps:,.0f} rows/s", flush=True)
    top = ", ".join(f"{r['function']} {r['tottime_share'] * 100:.0f}%" for r in profile["top_by_tottime"][:4])
    return [Figure("overhead", value, 0.8, ">=",
                   measurements={"asset_rows_per_s": asset_rps, "bare_rows_per_s": bare_rps,
                                 "asset_runs": asset_runs, "bare_runs": bare_runs,
                                 "same_rows": bare["rows"] == asset["rows"], "profile": profile},
                   settings={"object": "events", "partition": day, "rows_per_day": rows_per_day,
                             "page_size": obj.page_size, "sandbox_scale": scale, "span_days": 2,
                             "repeats": repeats, "rate_limits": "off"},
                   seconds=time.perf_counter() - t0,
                   note=f"events partition, asset rows/s / bare fetch+decode rows/s; profile top: {top}")]
