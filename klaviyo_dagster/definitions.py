"""The code location `workspace.yaml` loads: ingest and activation definitions with their resources.

Configuration comes from the environment so the same module serves the sandbox, CI and a real account:
`KLAVIYO_API_KEY`, `KLAVIYO_BASE_URL` (default https://a.klaviyo.com), `KLAVIYO_DUCKDB_PATH` (default
data/warehouse.duckdb), `KLAVIYO_START_DATE` (first daily partition, default 2024-01-01) and
`KLAVIYO_EVENT_LOOKBACK_DAYS` (default 7). For anything else build your own with `build_definitions(...)`.
"""

from __future__ import annotations

import os

import dagster as dg

from klaviyo_dagster.activate import build_activation_definitions
from klaviyo_dagster.automation.schedules import DEFAULT_LOOKBACK_DAYS
from klaviyo_dagster.ingest import DEFAULT_START_DATE, build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """`klaviyo` (API key read from KLAVIYO_API_KEY at run time, never stored) and `warehouse`."""
    return {
        "klaviyo": KlaviyoResource(
            api_key=dg.EnvVar("KLAVIYO_API_KEY") if os.environ.get("KLAVIYO_API_KEY") else None
        ),
        "warehouse": WarehouseResource(),
    }


def build_definitions(
    *,
    start_date: str | None = None,
    lookback_days: int | None = None,
) -> dg.Definitions:
    """Ingest (every object, daily partitions, schedule) + activation (assets, job, sensor, schedule)."""
    ingest = build_ingest_definitions(
        start_date=start_date or os.environ.get("KLAVIYO_START_DATE") or DEFAULT_START_DATE,
        lookback_days=lookback_days
        if lookback_days is not None
        else int(os.environ.get("KLAVIYO_EVENT_LOOKBACK_DAYS", str(DEFAULT_LOOKBACK_DAYS))),
    )
    activation = build_activation_definitions()
    return dg.Definitions.merge(ingest, activation, dg.Definitions(resources=default_resources()))


defs = build_definitions()
