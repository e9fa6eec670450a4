"""Materialize one ingest asset partition in-process, the way Dagster runs it, for the benchmarks.

`materialize_partition("events", "2026-07-20", base_url, api_key, db_path)` builds the real ingest
definitions for that object, runs the asset for the partition against the given sandbox and DuckDB file
in an ephemeral instance, and returns the rows written, wall seconds and the asset's metadata.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.ingest import asset_key
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource

# The run's console logger shows warnings and errors only (Dagster's per-event DEBUG lines are noise here).
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def resources(base_url: str, api_key: str, db_path: str, rate_limit_scale: float = 0.0) -> dict[str, Any]:
    """The two resources every ingest asset needs, pointed at a sandbox and a DuckDB file."""
    return {
        "klaviyo": KlaviyoResource(api_key=api_key, base_url=base_url, rate_limit_scale=rate_limit_scale),
        "warehouse": WarehouseResource(database=db_path),
    }


def materialize_partition(name: str, partition_key: str, base_url: str, api_key: str, db_path: str, *,
                          rate_limit_scale: float = 0.0, start_date: str = "2024-01-01") -> dict[str, Any]:
    """Run asset klaviyo/<name> for one partition; rows, seconds and metadata of the materialization."""
    defs = build_ingest_definitions(start_date=start_date, objects=[name], schedule=False)
    assets = list(defs.assets or [])
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        # Snapshot objects are unpartitioned (a run captures the current state): no partition key for them.
        partitioned = any(a.partitions_def is not None for a in assets)
        result = dg.materialize(assets, partition_key=partition_key if partitioned else None, instance=instance,
                                raise_on_error=True,
                                resources=resources(base_url, api_key, db_path, rate_limit_scale),
                                run_config=QUIET_RUN_CONFIG)
    seconds = time.perf_counter() - started
    mats = result.asset_materializations_for_node(asset_key(name).to_python_identifier())
    metadata = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()
                if k not in ("preview", "dagster/column_schema")} if mats else {}
    return {"object": name, "partition": partition_key, "rows": int(metadata.get("dagster/partition_row_count", 0)),
            "seconds": seconds, "metadata": metadata}


def quiet_dagster() -> None:
    """Keep Dagster's per-event debug lines off the benchmark's output."""
    import logging

    for name in ("dagster", "dagster.builtin"):
        logging.getLogger(name).setLevel(logging.WARNING)
