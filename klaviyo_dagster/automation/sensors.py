"""Sensors and schedules that trigger activation when its upstream warehouse tables change.

:func:`build_table_change_sensor` watches a fingerprint of one or more tables (row count plus the max
of an updated-at column, or, without such a column, an order-independent content hash) and keeps the
last fingerprint it acted on in the sensor cursor: it requests a run only when the fingerprint moves,
so an unchanged table never launches a run. :func:`build_activation_schedule` is the time-based
alternative. Both default to STOPPED: turning on writes to a Klaviyo account is a deliberate act.
"""

import hashlib
from collections.abc import Mapping, Sequence

import orjson
from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from klaviyo_dagster.activate.inputs import quote_ident, quote_table
from klaviyo_dagster.warehouse import WarehouseResource


def table_fingerprint_sql(table: str, updated_column: str | None = None) -> str:
    """SQL returning one row (row count, change marker) for ``table``."""
    if updated_column:
        marker = f"CAST(max({quote_ident(updated_column)}) AS VARCHAR)"
    else:
        # bit_xor of per-row hashes: independent of row order, moves when any value changes.
        marker = "CAST(bit_xor(hash(t)) AS VARCHAR)"
    return f"SELECT count(*), {marker} FROM {quote_table(table)} t"


def tables_fingerprint(warehouse: object, tables: Mapping[str, str | None]) -> str | None:
    """A short digest of every watched table's fingerprint; None when a table does not exist yet."""
    parts = []
    for table, updated_column in tables.items():
        try:
            row = warehouse.query(table_fingerprint_sql(table, updated_column))[0]  # type: ignore[attr-defined]
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise
        parts.append([table, int(row[0]), row[1]])
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


def build_table_change_sensor(
    name: str,
    job: JobDefinition | UnresolvedAssetJobDefinition,
    tables: Mapping[str, str | None] | Sequence[str],
    minimum_interval_seconds: int = 60,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """A sensor launching ``job`` once per change of ``tables`` ({table: updated column or None}).

    It reads the tables through the ``warehouse`` resource (a :class:`WarehouseResource`).

    The first evaluation (no cursor) counts as a change, so a freshly enabled sensor syncs once.
    """
    watched = dict(tables) if isinstance(tables, Mapping) else dict.fromkeys(tables)

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Launches {job.name} when {', '.join(watched)} change (row count + "
        "max updated column, or a content hash).",
    )
    def _sensor(context: SensorEvaluationContext, warehouse: WarehouseResource) -> SensorResult | SkipReason:
        fingerprint = tables_fingerprint(warehouse.get_warehouse(), watched)
        if fingerprint is None:
            return SkipReason(f"waiting for {', '.join(watched)} to exist in the warehouse")
        if fingerprint == context.cursor:
            return SkipReason(f"{', '.join(watched)} unchanged since the last run request")
        return SensorResult(run_requests=[RunRequest(run_key=f"{name}:{fingerprint}")], cursor=fingerprint)

    return _sensor


def build_activation_schedule(
    job: JobDefinition | UnresolvedAssetJobDefinition,
    cron_schedule: str = "0 * * * *",
    name: str = "klaviyo_activation_schedule",
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """Run the activation job on a timetable (hourly by default): an alternative to the change sensor."""
    return ScheduleDefinition(name=name, job=job, cron_schedule=cron_schedule, default_status=default_status,
                              execution_timezone="UTC")
