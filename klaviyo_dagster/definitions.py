"""The code location `workspace.yaml` loads (named `klaviyo`): ingest and activation for one account.

Configuration comes from the environment so the same module serves the sandbox, CI and a real account:
`KLAVIYO_API_KEY`, `KLAVIYO_BASE_URL` (default https://a.klaviyo.com), `KLAVIYO_DUCKDB_PATH` (default
data/warehouse.duckdb), `KLAVIYO_START_DATE` (first daily partition, default 2024-01-01),
`KLAVIYO_EVENT_LOOKBACK_DAYS` (default 7), `KLAVIYO_REPORTS` (1: the Reporting API assets too, or their names
comma-separated; off by default: 225 requests a day bound them) and `KLAVIYO_DEMO_MODELS` (1: add the demo SQL
models that build activation's input tables; `make demo` and `make dev` set it, a real account's location
leaves it off).
For anything else use the YAML component (`KlaviyoComponent`) or `build_ingest_definitions(...)`.
"""

from __future__ import annotations

import os

import dagster as dg

from klaviyo_dagster.automation.executors import run_executor
from klaviyo_dagster.automation.schedules import DEFAULT_LOOKBACK_DAYS
from klaviyo_dagster.factories import build_activation_definitions, build_ingest_definitions
from klaviyo_dagster.ingest import DEFAULT_START_DATE
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource

DEMO_MODELS_ENV = "KLAVIYO_DEMO_MODELS"
_ON = ("1", "true", "yes", "on")


def _env(name: str) -> dg.EnvVar | None:
    """`EnvVar(name)` when set: the UI then shows the variable's name, and the run reads its value."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """`klaviyo` (API key and base URL as EnvVars, never stored) and `warehouse`."""
    return {
        "klaviyo": KlaviyoResource(api_key=_env("KLAVIYO_API_KEY"), base_url=_env("KLAVIYO_BASE_URL")),
        "warehouse": WarehouseResource(),
    }


def demo_models_enabled() -> bool:
    """Whether `KLAVIYO_DEMO_MODELS` asks for the demo models."""
    return os.environ.get(DEMO_MODELS_ENV, "").strip().lower() in _ON


def reports_enabled() -> bool | list[str]:
    """`KLAVIYO_REPORTS`: 1/true for every report asset, or names (``flow_series,campaign_values``)."""
    raw = os.environ.get("KLAVIYO_REPORTS", "").strip()
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    return [n.strip() for n in raw.split(",") if n.strip()]


def build_definitions(
    *,
    start_date: str | None = None,
    lookback_days: int | None = None,
    include_demo_models: bool | None = None,
    reports: bool | list[str] | None = None,
) -> dg.Definitions:
    """Ingest (every object, daily partitions, schedule) + activation (assets, job, sensor, schedule).
    ``reports``: the Reporting API assets (None: from `KLAVIYO_REPORTS`)."""
    resources = default_resources()
    ingest = build_ingest_definitions(
        start_date=start_date or os.environ.get("KLAVIYO_START_DATE") or DEFAULT_START_DATE,
        lookback_days=lookback_days
        if lookback_days is not None
        else int(os.environ.get("KLAVIYO_EVENT_LOOKBACK_DAYS", str(DEFAULT_LOOKBACK_DAYS))),
        reports=reports_enabled() if reports is None else reports,
        resources=resources,
    )
    activation = build_activation_definitions(
        include_demo_models=demo_models_enabled() if include_demo_models is None else include_demo_models,
        resources=resources,
    )
    return dg.Definitions.merge(ingest, activation, dg.Definitions(executor=run_executor()))


defs = build_definitions()
