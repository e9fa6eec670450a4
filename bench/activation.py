"""`activation`: profile import of a 100k-row table: job packing, unchanged re-sync, 1% change.

A DuckDB table of `rows` profiles (email, external id, phone for a third, names, custom properties) is
imported with `activate.run_profile_import` into a sandbox in its own process (rate limits off):
1. first sync: profiles per job against Klaviyo's 10,000 cap and body bytes against 5 MB (every job but
   the last must be full on one of the two caps, and none over); a second table of wide (~1 KB)
   profiles makes the 5 MB cap the binding one;
2. unchanged re-sync: write calls (POST/DELETE answered by the sandbox) must be 0;
3. 1% of the rows changed: the rows sent must be exactly those.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.common import Figure, ratio
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.activate import ProfileImportSettings, run_profile_import
from klaviyo_dagster.activate.jobs import MAX_JOB_BYTES, MAX_JOB_PROFILES
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.warehouse import Warehouse

TABLE = "bench.audience_profiles"


def build_table(warehouse: Warehouse, rows: int, pad: int = 0) -> None:
    """The input table: `rows` valid profiles with a few custom properties (`pad` bytes more in `notes`)."""
    warehouse.execute("CREATE SCHEMA IF NOT EXISTS bench")
    warehouse.execute(f"""
        CREATE OR REPLACE TABLE {TABLE} AS
        SELECT 'person' || i || '@example.com' AS email,
               'ext-' || i AS external_id,
               CASE WHEN i % 3 = 0 THEN '+1415555' || lpad(CAST(i % 10000 AS VARCHAR), 4, '0') END AS phone_number,
               'First' || (i % 997) AS first_name,
               'Last' || (i % 991) AS last_name,
               'en-US' AS locale,
               ['free', 'basic', 'plus', 'pro'][1 + i % 4] AS plan,
               round((i % 5000) * 1.37, 2) AS lifetime_value,
               i % 7 = 0 AS vip,
               DATE '2025-01-01' + CAST(i % 365 AS INTEGER) AS first_order_date,
               {f"repeat(chr(97 + CAST(i % 26 AS INTEGER)), {pad})" if pad else "NULL"} AS notes
        FROM range({rows}) t(i)""")


def _writes(stats: dict[str, int]) -> int:
    return sum(n for op, n in stats.items() if op.startswith(("POST ", "DELETE ", "PATCH ")))


def _sync(sb: SandboxProcess, warehouse: Warehouse) -> tuple[Any, dict[str, int], float]:
    sb.stats(reset=True)
    started = time.perf_counter()
    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=0) as client:
        result = run_profile_import(client, warehouse, ProfileImportSettings(table=TABLE))
    return result, sb.stats(), time.perf_counter() - started


def _summary(result: Any, served: dict[str, int], seconds: float) -> dict[str, Any]:
    return {"rows": result.rows, "sent": result.sent, "unchanged": result.unchanged, "imported": result.imported,
            "failed": result.failed, "rejected": result.rejected, "jobs": len(result.job_ids),
            "job_profiles": result.job_profiles, "job_bytes": result.job_bytes, "write_calls": _writes(served),
            "requests_by_operation": served, "seconds": round(seconds, 2)}


def run(quick: bool = False, rows: int = 100_000, changed_share: float = 0.01, wide_rows: int = 20_000) -> list[Figure]:
    rows = 20_000 if quick else rows
    t0 = time.perf_counter()
    with SandboxProcess(scale="1000:1000") as sb, tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(f"{tmp}/activation.duckdb")
        build_table(warehouse, rows)
        first = _summary(*_sync(sb, warehouse))
        again = _summary(*_sync(sb, warehouse))
        n_changed = int(rows * changed_share)
        step = rows // n_changed
        warehouse.execute(f"UPDATE {TABLE} SET first_name = first_name || '-changed' "
                          f"WHERE CAST(split_part(external_id, '-', 2) AS BIGINT) % {step} = 0")
        changed_rows = warehouse.query(f"SELECT count(*) FROM {TABLE} WHERE first_name LIKE '%-changed'")[0][0]
        third = _summary(*_sync(sb, warehouse))
        # Wide profiles (~1 KB each): the 5 MB cap binds before the 10,000-profile one.
        wide_wh = Warehouse(f"{tmp}/wide.duckdb")
        build_table(wide_wh, wide_rows, pad=900)
        wide = _summary(*_sync(sb, wide_wh))
    fills, over_cap = [], False
    for sync in (first, wide):
        jobs = list(zip(sync["job_profiles"], sync["job_bytes"], strict=True))
        fills += [max(p / MAX_JOB_PROFILES, b / MAX_JOB_BYTES) for p, b in (jobs[:-1] or jobs)]
        over_cap = over_cap or any(p > MAX_JOB_PROFILES or b > MAX_JOB_BYTES for p, b in jobs)
    fill = min(fills) if fills and not over_cap else 0.0
    print(f"  activation: {first['jobs']} jobs for {first['sent']:,} profiles, re-sync writes {again['write_calls']}, "
          f"{third['sent']} sent for {changed_rows} changed", flush=True)
    settings = {"rows": rows, "wide_rows": wide_rows, "wide_pad_bytes": 900, "changed_share": changed_share, "rate_limits": "off", "table": TABLE}
    measurements = {"first_sync": first, "wide_first_sync": wide, "unchanged_resync": again, "changed_resync": third,
                    "changed_rows": changed_rows, "job_fill_per_full_job": [round(f, 4) for f in fills],
                    "any_job_over_cap": over_cap}
    seconds = time.perf_counter() - t0
    extras = [
        Figure("activation_resync_write_calls", float(again["write_calls"]), 0.0, "<=", unit="count",
               note="write calls on an unchanged re-sync", settings=settings),
        Figure("activation_changed_sent_ratio", ratio(third["sent"], changed_rows), 1.0, "==",
               note=f"rows sent / rows changed ({third['sent']} / {changed_rows})", settings=settings),
    ]
    return [Figure("activation", fill, 0.95, ">=", measurements=measurements, settings=settings,
                   extra=extras, seconds=seconds,
                   note=f"worst full job's fullest cap (profiles/10,000 or bytes/5 MB): {first['jobs']} jobs for "
                        f"{first['sent']:,} profiles (max {max(first['job_profiles'], default=0):,}); wide: "
                        f"{wide['jobs']} jobs, max {max(wide['job_bytes'], default=0) / 1e6:.2f} MB")]
