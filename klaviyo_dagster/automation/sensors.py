"""Sensors and schedules that trigger activation when its upstream warehouse tables change.

:func:`build_table_change_sensor` watches a fingerprint of one or more tables (row count plus the max
of an updated-at column, or, without such a column, an order-independent content hash) and keeps the
last fingerprint it acted on in the sensor cursor: it requests a run only when the fingerprint moves,
so an unchanged table never launches a run. :func:`build_activation_schedule` is the time-based
alternative. Both default to STOPPED: turning on writes to a Klaviyo account is a deliberate act.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from klaviyo_dagster.warehouse import WarehouseResource
from klaviyo_dagster.warehouse.fingerprint import tables_fingerprint

# A job: `JobDefinition` or what `define_asset_job` returns (its class is not public API).
AnyJob = Any


def build_table_change_sensor(
    name: str,
    job: AnyJob,
    tables: Mapping[str, str | None] | Sequence[str],
    minimum_interval_seconds: int = 60,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    warehouse_resource_key: str = "warehouse",
) -> SensorDefinition:
    """A sensor launching ``job`` once per change of ``tables`` ({table: updated column or None}).

    It reads the tables through the ``warehouse_resource_key`` resource (a :class:`WarehouseResource`).

    The first evaluation (no cursor) counts as a change, so a freshly enabled sensor syncs once.
    """
    watched = dict(tables) if isinstance(tables, Mapping) else dict.fromkeys(tables)

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={warehouse_resource_key},
        description=f"Launches {job.name} when {', '.join(watched)} change (row count + "
        "max updated column, or a content hash).",
    )
    def _sensor(context: SensorEvaluationContext, **resources: Any) -> SensorResult | SkipReason:
        # Direct invocation passes required resources as keywords; the daemon puts them on the context.
        warehouse: WarehouseResource = resources.get(warehouse_resource_key) or getattr(
            context.resources, warehouse_resource_key
        )
        fingerprint = tables_fingerprint(warehouse.get_warehouse(), watched)
        if fingerprint is None:
            return SkipReason(f"waiting for {', '.join(watched)} to exist in the warehouse")
        if fingerprint == context.cursor:
            return SkipReason(f"{', '.join(watched)} unchanged since the last run request")
        return SensorResult(run_requests=[RunRequest(run_key=f"{name}:{fingerprint}")], cursor=fingerprint)

    return _sensor


def build_activation_schedule(
    job: AnyJob,
    cron_schedule: str = "0 * * * *",
    name: str = "klaviyo_activation_schedule",
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """Run the activation job on a timetable (hourly by default): an alternative to the change sensor."""
    return ScheduleDefinition(name=name, job=job, cron_schedule=cron_schedule, default_status=default_status,
                              execution_timezone="UTC")
