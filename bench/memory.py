"""`memory`: peak RSS of materializing a 1M-row events partition / a 10k-row one.

Each materialization runs in a fresh child process (`bench.memory_child`, peak RSS from its own
`ru_maxrss`); the sandbox runs in yet another process, so its memory is not counted. The sandbox's
events span 2 days, so `2 * rows` events put `rows` in yesterday's partition. Also reported: the growth
above the child's RSS after imports, for each size.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

import orjson

from bench.common import UTC, Figure, ratio
from bench.sandbox_proc import ROOT, SandboxProcess


def materialize_in_child(rows_per_day: int, day: str, tmp: str) -> dict[str, Any]:
    """Start a sandbox with `rows_per_day` events in `day`, materialize it in a fresh process."""
    # One event in 50 of the last 3 days arrives late (withheld until released): ask for 50/49 as many.
    events = -(-rows_per_day * 2 * 50 // 49)
    with SandboxProcess(scale=f"2000:{events}", span_days=2) as sb:
        out = subprocess.run([sys.executable, "-m", "bench.memory_child", "events", day, f"{tmp}/m{rows_per_day}.duckdb"],
                             cwd=ROOT, env=sb.env(), capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed ({out.returncode}): {out.stderr[-3000:]}")
    result = orjson.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_day"] = rows_per_day
    return result


def run(quick: bool = False) -> list[Figure]:
    big, small = (200_000, 10_000) if quick else (1_000_000, 10_000)
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        small_run = materialize_in_child(small, day, tmp)
        big_run = materialize_in_child(big, day, tmp)
    value = ratio(big_run["peak_rss_kb"], small_run["peak_rss_kb"])
    growth = ratio(big_run["peak_rss_kb"] - big_run["baseline_rss_kb"],
                   small_run["peak_rss_kb"] - small_run["baseline_rss_kb"])
    print(f"  memory: peak {big_run['peak_rss_kb'] / 1024:.0f} MiB ({big:,} rows) vs "
          f"{small_run['peak_rss_kb'] / 1024:.0f} MiB ({small:,} rows)", flush=True)
    return [Figure("memory", value, 2.0, "<=",
                   measurements={"big": big_run, "small": small_run, "growth_above_imports_ratio": growth,
                                 "big_rows_per_s": big_run["rows"] / big_run["seconds"]},
                   settings={"object": "events", "partition": day, "big_rows": big, "small_rows": small,
                             "span_days": 2, "rate_limits": "off"},
                   seconds=time.perf_counter() - t0,
                   note=f"events partition peak RSS {big:,} / {small:,} rows "
                        f"({big_run['peak_rss_kb'] / 1024:.0f} / {small_run['peak_rss_kb'] / 1024:.0f} MiB)")]
