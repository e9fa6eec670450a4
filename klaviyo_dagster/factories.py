"""The Python route: `build_ingest_definitions` and `build_activation_definitions` -> `dagster.Definitions`.

These assemble the assets of `ingest/` and `activate/` with the jobs, schedules and sensors of
`automation/` (the one layer that knows both), for one Klaviyo account. A second account is a second call
with its own translator key prefix, resource keys and schema; `Definitions.merge` puts them in one code
location. The YAML route (`KlaviyoComponent`, components/) calls the same two functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from klaviyo_dagster.activate import ACTIVATION_JOB, ACTIVATION_SENSOR, build_activation_assets
from klaviyo_dagster.activate.demo_models import PROFILES_ENRICHED, VIP_AUDIENCE
from klaviyo_dagster.automation.jobs import (
    INCREMENTAL_JOB,
    SNAPSHOT_SCHEDULE,
    SNAPSHOTS_JOB,
    build_ingest_jobs,
    build_snapshot_schedule,
)
from klaviyo_dagster.automation.schedules import (
    DEFAULT_CRON,
    DEFAULT_LOOKBACK_DAYS,
    DEFAULT_REPORT_CRON,
    DEFAULT_REPORT_LOOKBACK_DAYS,
    DEFAULT_SWEEP_CRON,
    REPORTING_JOB,
    REPORTING_SCHEDULE,
    SCHEDULE_NAME,
    SWEEP_JOB,
    SWEEP_SCHEDULE,
    build_ingest_schedule,
    build_report_schedule,
    build_sweep_job,
)
from klaviyo_dagster.automation.sensors import build_activation_schedule, build_table_change_sensor
from klaviyo_dagster.ingest import build_ingest_assets, build_sweep_assets, get_object
from klaviyo_dagster.translator import DagsterKlaviyoTranslator
from klaviyo_dagster.warehouse import WarehouseResource


def _names(translator: DagsterKlaviyoTranslator, default: str) -> str:
    """``klaviyo_x`` -> ``<prefix>_x`` so a second account's jobs, schedules and sensors do not collide."""
    prefix = translator.name_prefix
    return default if prefix == "klaviyo" else prefix + default.removeprefix("klaviyo")


def _warehouse_facts(resources: Mapping[str, Any] | None, key: str) -> tuple[str, str]:
    """(catalog, schema) of the warehouse resource ``key`` as definitions show them (defaults otherwise)."""
    resource = (resources or {}).get(key)
    if not isinstance(resource, WarehouseResource):
        resource = WarehouseResource()
    return resource.catalog(), resource.schema_


def build_ingest_definitions(
    *,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    schedule: bool = True,
    cron_schedule: str = DEFAULT_CRON,
    resources: Mapping[str, Any] | None = None,
    translator: DagsterKlaviyoTranslator | None = None,
    warehouse_resource_key: str = "warehouse",
    deletion_sweeps: bool = True,
    sweep_cron: str = DEFAULT_SWEEP_CRON,
    max_deleted_share: float = 0.5,
    report_cron: str = DEFAULT_REPORT_CRON,
    report_lookback_days: int = DEFAULT_REPORT_LOOKBACK_DAYS,
    **asset_options: Any,
) -> dg.Definitions:
    """Assets ``klaviyo/<object>`` (+ checks), the ingest jobs and schedules (``klaviyo_ingest_daily`` ...).

    With ``reports`` (see `build_ingest_assets`): the Reporting API assets, job ``klaviyo_reporting_job``
    and schedule ``klaviyo_reporting_daily`` (``report_cron``: yesterday and ``report_lookback_days`` days
    before it in one range run, for conversions attributed late).

    ``deletion_sweeps``: also ``klaviyo/<object>_deleted`` for the objects Klaviyo deletes from (profiles,
    campaigns, flows, templates), job ``klaviyo_deletion_sweep`` and its schedule (``sweep_cron``, weekly).

    ``asset_options`` are `klaviyo_dagster.ingest.build_ingest_assets`'s (``start_date``, ``objects``,
    ``event_metrics``, ``profile_subscriptions``, ``profile_predictive_analytics``, ``list_profile_count``,
    ``segment_profile_count``, ``campaign_channels``,
    ``include_archived``, ``chunk_rows``, ``klaviyo_resource_key``, ``schema``). Here: ``lookback_days``
    (days before yesterday the schedule re-reads events for late arrivals), ``schedule`` / ``cron_schedule``,
    ``translator`` and ``resources`` (added to the definitions; none unless passed: the caller supplies
    ``klaviyo`` and ``warehouse``).
    """
    translator = translator or DagsterKlaviyoTranslator()
    catalog, default_schema = _warehouse_facts(resources, warehouse_resource_key)
    assets = build_ingest_assets(
        translator=translator, warehouse_resource_key=warehouse_resource_key, default_schema=default_schema,
        catalog=catalog, **asset_options,
    )  # fmt: skip
    # Reporting API assets have a job and schedule of their own: a long backfill of the incremental objects
    # must not be refused because the reports' 225-a-day budget cannot cover its range.
    reports = {n: assets.pop(n) for n in [n for n in assets if get_object(n).report is not None]}
    report_jobs, report_schedules = _report_jobs(reports, translator, schedule, report_cron, report_lookback_days)
    incremental_job, snapshots_job = build_ingest_jobs(
        list(assets.values()), incremental_name=_names(translator, INCREMENTAL_JOB),
        snapshots_name=_names(translator, SNAPSHOTS_JOB),
    )  # fmt: skip
    jobs = [j for j in (incremental_job, snapshots_job) if j is not None]
    schedules = []
    if schedule and incremental_job is not None:
        incremental = [a for a in assets.values() if a.partitions_def is not None]
        events = assets.get("events")
        schedules.append(
            build_ingest_schedule(
                [a.key for a in incremental],
                incremental[0].partitions_def,  # type: ignore[arg-type]
                lookback_key=events.key if events is not None and events.partitions_def is not None else None,
                lookback_days=lookback_days,
                cron_schedule=cron_schedule,
                name=_names(translator, SCHEDULE_NAME),
                job=incremental_job,
            )
        )
    if schedule and snapshots_job is not None:
        schedules.append(
            build_snapshot_schedule(snapshots_job, cron_schedule, name=_names(translator, SNAPSHOT_SCHEDULE))
        )
    sweeps = build_sweep_assets(
        translator=translator, warehouse_resource_key=warehouse_resource_key, default_schema=default_schema,
        catalog=catalog, max_deleted_share=max_deleted_share, **asset_options,
    ) if deletion_sweeps else {}  # fmt: skip
    if sweeps:
        sweep_job, sweep_schedules = build_sweep_job(
            [a.key for a in sweeps.values()], cron_schedule=sweep_cron, schedule=schedule,
            job_name=_names(translator, SWEEP_JOB), schedule_name=_names(translator, SWEEP_SCHEDULE),
        )  # fmt: skip
        jobs.append(sweep_job)
        schedules.extend(sweep_schedules)
    return dg.Definitions(assets=[*assets.values(), *reports.values(), *sweeps.values()],
                          jobs=[*jobs, *report_jobs], schedules=[*schedules, *report_schedules],
                          resources=dict(resources or {}))


def _report_jobs(
    reports: Mapping[str, dg.AssetsDefinition], translator: DagsterKlaviyoTranslator, schedule: bool, cron: str,
    lookback_days: int,
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """Job ``klaviyo_reporting_job`` over the report assets and schedule ``klaviyo_reporting_daily``
    (yesterday and the lookback days before it, one range run; STOPPED like the other schedules)."""
    if not reports:
        return [], []
    first = next(iter(reports.values()))
    job = dg.define_asset_job(
        _names(translator, REPORTING_JOB), selection=[a.key for a in reports.values()],
        description="Klaviyo Reporting API (campaign and flow values, flow series), daily partitions; each run "
        "checks its requests against the 225-a-day budget before sending any.",
    )  # fmt: skip
    if not schedule:
        return [job], []
    return [job], [build_report_schedule(
        job, first.partitions_def,  # type: ignore[arg-type]
        lookback_days=lookback_days, cron_schedule=cron, name=_names(translator, REPORTING_SCHEDULE),
    )]  # fmt: skip


def build_activation_definitions(
    profiles_table: str = PROFILES_ENRICHED,
    audience_table: str = VIP_AUDIENCE,
    *,
    updated_columns: Mapping[str, str | None] | None = None,
    sensor_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    sensor_minimum_interval_seconds: int = 60,
    schedule_cron: str = "0 * * * *",
    schedule_default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    resources: Mapping[str, Any] | None = None,
    translator: DagsterKlaviyoTranslator | None = None,
    warehouse_resource_key: str = "warehouse",
    **asset_options: Any,
) -> dg.Definitions:
    """Activation assets, inputs, job ``klaviyo_activation_job``, table-change sensor and hourly schedule
    (both STOPPED: writing to a Klaviyo account is switched on deliberately).

    ``asset_options`` are `klaviyo_dagster.activate.build_activation_assets`'s (``profile_columns``,
    ``audience_columns``, ``list_id``, ``list_name``, ``known_profiles_table``, ``source_schema``,
    ``include_demo_models``, ``vip_min_orders``, ``vip_list_name``, ``klaviyo_resource_key``, ``upstream``,
    ``events_table``, ``consent_table``, ``deletions_table`` and their columns). Demo models are off unless
    ``include_demo_models`` (`make demo`, `make dev`). ``updated_columns`` maps a watched table to its
    updated-at column for a cheap sensor fingerprint (default: content hash).
    """
    translator = translator or DagsterKlaviyoTranslator()
    catalog, _ = _warehouse_facts(resources, warehouse_resource_key)
    assets = build_activation_assets(
        profiles_table, audience_table, translator=translator, warehouse_resource_key=warehouse_resource_key,
        catalog=catalog, **asset_options,
    )  # fmt: skip
    activation_keys = [a.key for a in assets[-2:]]  # type: ignore[union-attr]
    job = dg.define_asset_job(
        _names(translator, ACTIVATION_JOB), selection=activation_keys,
        description="Send changed profiles and converge list membership to the audience.",
    )  # fmt: skip
    watched = {profiles_table: None, audience_table: None, **(updated_columns or {})}
    sensor = build_table_change_sensor(
        _names(translator, ACTIVATION_SENSOR), job, watched, minimum_interval_seconds=sensor_minimum_interval_seconds,
        default_status=sensor_default_status, warehouse_resource_key=warehouse_resource_key,
    )  # fmt: skip
    schedule = build_activation_schedule(
        job, schedule_cron, name=_names(translator, "klaviyo_activation_schedule"),
        default_status=schedule_default_status,
    )  # fmt: skip
    return dg.Definitions(assets=assets, jobs=[job], sensors=[sensor], schedules=[schedule],
                          resources=dict(resources or {}))
