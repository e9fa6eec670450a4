"""Shared helpers of the reliability tests: in-process ingest runs and warehouse-vs-truth comparison."""

from __future__ import annotations

import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

UTC = timezone.utc
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# object -> (sandbox type, cursor field) for the incremental objects
CURSORS = {
    "profiles": ("profile", "updated"),
    "events": ("event", "datetime"),
    "campaigns": ("campaign", "updated_at"),
    "flows": ("flow", "updated"),
    "templates": ("template", "updated"),
}


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def key(day: datetime) -> str:
    return day.strftime("%Y-%m-%d")


def first_day() -> datetime:
    """First day holding sandbox data (the data spans the 30 days before now)."""
    return today() - timedelta(days=30)


def ingest(
    handle: Any, database: str | Path, name: str, start: datetime, end: datetime, **klaviyo: Any
) -> dg.ExecuteInProcessResult:
    """Materialize ``klaviyo/<name>`` over days [start..end] (inclusive) in one run, in this process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=[name], schedule=False, start_date=key(first_day() - timedelta(days=5)))
    settings = {"api_key": handle.api_key, "base_url": handle.base_url, "max_backoff": 0.05, **klaviyo}
    resources = {"klaviyo": KlaviyoResource(**settings), "warehouse": WarehouseResource(database=str(database))}
    return dg.materialize(
        defs.assets,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        tags={RANGE_START: key(start), RANGE_END: key(end)},
        raise_on_error=False,
    )


def warehouse_rows(wh: Warehouse, table: str, start: datetime, end: datetime) -> Counter:
    """(id, cursor value ISO, day) -> count for the partitions [start, end] of ``table``."""
    cursor = CURSORS[table][1]
    rows = wh.query(
        f"SELECT id, {cursor}, _partition FROM {wh.qualified(table)} WHERE _partition BETWEEN ? AND ?",
        [start, end],
    )
    return Counter((rid, stamp.astimezone(UTC).isoformat(), part.date().isoformat()) for rid, stamp, part in rows)


def truth_rows(handle: Any, table: str, start: datetime, end: datetime) -> Counter:
    """The same key for the sandbox's records whose cursor lies in days [start, end]."""
    rtype, field = CURSORS[table]
    out: Counter = Counter()
    for rec in handle.truth.records(rtype, field, start, end + timedelta(days=1)):
        stamp = datetime.fromisoformat(rec["attributes"][field]).astimezone(UTC)
        out[(rec["id"], stamp.isoformat(), stamp.date().isoformat())] += 1
    return out


def lost_and_doubled(got: Counter, want: Counter) -> tuple[int, int]:
    """Rows of the truth missing from the warehouse, and extra copies (or rows the truth lacks)."""
    lost = sum(max(0, n - got.get(k, 0)) for k, n in want.items())
    doubled = sum(max(0, n - want.get(k, 0)) for k, n in got.items())
    return lost, doubled
