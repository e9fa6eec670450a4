"""`concurrency`: every ingest object materialized together vs the sum of their separate times.

One DAGSTER_HOME temp instance (sqlite storage; pool `klaviyo_api` limit set to the number of objects
so the pool never serialises them), the multiprocess executor, one sandbox process enforcing Klaviyo's
tier shapes scaled by F (the client told F). Each object is first run alone as its own run (same job,
`asset_selection` of one asset, same executor, so each pays the same step-process start-up), then all
in one run. Figure: sum of the separate wall times / the together wall time (a speedup).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from bench.common import UTC, Figure, ratio
from bench.concurrency_defs import build_job
from bench.materialize import QUIET_RUN_CONFIG
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.ingest import OBJECTS, POOL, asset_key

_LOCK_RE = re.compile(r"Got the DuckDB write lock on .* after ([0-9.]+) s")


def _instance_yaml(limit: int) -> str:
    return f"telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: {limit}\n"


def _execute(instance: dg.DagsterInstance, partition: str, keys: list[dg.AssetKey]) -> dict[str, Any]:
    started = time.perf_counter()
    result = dg.execute_job(dg.reconstructable(build_job), instance=instance, tags={"dagster/partition": partition},
                            asset_selection=keys, raise_on_error=False, run_config=QUIET_RUN_CONFIG)
    seconds = time.perf_counter() - started
    steps = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 2)  # type: ignore[union-attr]
    waits = lock_waits(m.user_message for m in instance.all_logs(result.run_id))
    return {"success": result.success, "seconds": round(seconds, 2), "step_seconds": steps,
            "duckdb_lock_waits": len(waits), "duckdb_lock_wait_s": round(sum(waits), 2)}


def lock_waits(messages: Iterable[str]) -> list[float]:
    """Seconds of each DuckDB write-lock wait the warehouse logged ("Got the DuckDB write lock ... after X s")."""
    out = []
    for text in messages:
        m = _LOCK_RE.search(text or "")
        if m:
            out.append(float(m.group(1)))
    return out


def run(quick: bool = False, factor: float = 0.25) -> list[Figure]:
    scale = "5000:50000" if quick else "50000:1000000"
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    names = [o.name for o in OBJECTS]
    t0 = time.perf_counter()
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "KLAVIYO_BASE_URL", "KLAVIYO_API_KEY",
                                            "KLAVIYO_DUCKDB_PATH", "BENCH_RATE_LIMIT_SCALE", "BENCH_START_DATE",
                                            "BENCH_MAX_CONCURRENT")}
    separate: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as home, SandboxProcess(scale=scale, rate_limits=f"scale:{factor:g}") as sb:
            Path(home, "dagster.yaml").write_text(_instance_yaml(len(names)))
            os.environ.update({"DAGSTER_HOME": home, "KLAVIYO_BASE_URL": sb.base_url, "KLAVIYO_API_KEY": sb.api_key,
                               "BENCH_RATE_LIMIT_SCALE": str(factor), "BENCH_START_DATE": "2024-01-01",
                               "BENCH_MAX_CONCURRENT": str(len(names))})
            with dg.DagsterInstance.get() as instance:
                for name in names:
                    sb.set_rate_limits(f"scale:{factor:g}")  # fresh windows for every run
                    os.environ["KLAVIYO_DUCKDB_PATH"] = f"{home}/separate_{name}.duckdb"
                    separate[name] = _execute(instance, day, [asset_key(name)])
                sb.set_rate_limits(f"scale:{factor:g}")
                os.environ["KLAVIYO_DUCKDB_PATH"] = f"{home}/together.duckdb"
                together = _execute(instance, day, [asset_key(n) for n in names])
                pool_limit = instance.event_log_storage.get_concurrency_info(POOL).slot_count
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    total = sum(r["seconds"] for r in separate.values())
    ok = together["success"] and all(r["success"] for r in separate.values())
    value = ratio(total, together["seconds"]) if ok else None
    print(f"  concurrency: separate sum {total:.1f} s, together {together['seconds']:.1f} s", flush=True)
    return [Figure("concurrency", value, 1.5, ">=",
                   measurements={"separate": separate, "separate_sum_s": round(total, 2), "together": together,
                                 "all_succeeded": ok, "pool_slots": pool_limit},
                   settings={"sandbox_scale": scale, "rate_limits": f"scale:{factor:g}", "client_rate_limit_scale": factor,
                             "partition": day, "objects": names, "executor": "multiprocess",
                             "max_concurrent": len(names), "pool": POOL, "pool_default_limit": len(names)},
                   seconds=time.perf_counter() - t0,
                   note=f"sum of {len(names)} separate runs {total:.0f} s / all together {together['seconds']:.0f} s "
                        "(multiprocess executor)")]
