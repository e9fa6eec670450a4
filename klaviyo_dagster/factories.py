"""The Python route: `build_ingest_definitions` and `build_activation_definitions` -> `dagster.Definitions`.

These assemble the assets of `ingest/` and `activate/` with the jobs, schedules and sensors of
`automation/` (the one layer that knows both), for one Klaviyo account. A second account is a second call
with its own translator key prefix, resource keys and schema; `Definitions.merge` puts them in one code
location. The YAML route (`KlaviyoComponent`, components/) calls the same two functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import dagster as dg

from klaviyo_dagster.activate import ACTIVATION_JOB, ACTIVATION_SENSOR, build_activation_assets
from klaviyo_dagster.activate.demo_models import DEFAULT_VIP_LIST, PROFILES_ENRICHED, VIP_AUDIENCE
from klaviyo_dagster.activate.render import ProfileColumns
from klaviyo_dagster.automation.schedules import (
    DEFAULT_CRON,
    DEFAULT_LOOKBACK_DAYS,
    DEFAULT_SWEEP_CRON,
    SCHEDULE_NAME,
    SWEEP_JOB,
    SWEEP_SCHEDULE,
    build_ingest_schedule,
    build_sweep_job,
)
from klaviyo_dagster.automation.sensors import build_activation_schedule, build_table_change_sensor
from klaviyo_dagster.ingest import (
    CAMPAIGN_CHANNELS,
    DEFAULT_START_DATE,
    build_ingest_assets,
    build_sweep_assets,
)
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
    start_date: str | date | datetime = DEFAULT_START_DATE,
    objects: Sequence[str] | None = None,
    event_metrics: Sequence[str] | None = None,
    profile_subscriptions: bool = True,
    profile_predictive_analytics: bool = False,
    campaign_channels: Sequence[str] = CAMPAIGN_CHANNELS,
    include_archived: bool = True,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    snapshot_max_lag_days: float = 1.0,
    schedule: bool = True,
    cron_schedule: str = DEFAULT_CRON,
    chunk_rows: int = 10_000,
    resources: Mapping[str, Any] | None = None,
    translator: DagsterKlaviyoTranslator | None = None,
    klaviyo_resource_key: str = "klaviyo",
    warehouse_resource_key: str = "warehouse",
    schema: str | None = None,
    deletion_sweeps: bool = True,
    sweep_cron: str = DEFAULT_SWEEP_CRON,
    max_deleted_share: float = 0.5,
) -> dg.Definitions:
    """Assets ``klaviyo/<object>`` (+ checks) and the daily ingest schedule ``klaviyo_ingest_daily``.

    ``deletion_sweeps``: also ``klaviyo/<object>_deleted`` for the objects Klaviyo deletes from (profiles,
    campaigns, flows, templates), job ``klaviyo_deletion_sweep`` and its schedule (``sweep_cron``, weekly).

    Options as `klaviyo_dagster.ingest.build_ingest_assets`, plus ``lookback_days`` (days before yesterday
    the schedule re-reads events for late arrivals), ``schedule`` / ``cron_schedule`` and ``resources``
    (added to the definitions; none unless passed: the caller supplies ``klaviyo`` and ``warehouse``).
    """
    translator = translator or DagsterKlaviyoTranslator()
    catalog, default_schema = _warehouse_facts(resources, warehouse_resource_key)
    options: dict[str, Any] = dict(
        objects=objects,
        event_metrics=event_metrics,
        profile_subscriptions=profile_subscriptions,
        profile_predictive_analytics=profile_predictive_analytics,
        campaign_channels=campaign_channels,
        include_archived=include_archived,
        snapshot_max_lag_days=snapshot_max_lag_days,
        chunk_rows=chunk_rows,
        translator=translator,
        klaviyo_resource_key=klaviyo_resource_key,
        warehouse_resource_key=warehouse_resource_key,
        schema=schema,
        default_schema=default_schema,
        catalog=catalog,
    )
    assets = build_ingest_assets(start_date=start_date, **options)
    schedules = []
    if schedule and assets:
        first = next(iter(assets.values()))
        events = assets.get("events")
        schedules.append(
            build_ingest_schedule(
                [a.key for a in assets.values()],
                first.partitions_def,  # type: ignore[arg-type]
                lookback_key=events.key if events is not None else None,
                lookback_days=lookback_days,
                cron_schedule=cron_schedule,
                name=_names(translator, SCHEDULE_NAME),
            )
        )
    jobs = []
    sweeps = build_sweep_assets(max_deleted_share=max_deleted_share, **options) if deletion_sweeps else {}
    if sweeps:
        job, sweep_schedules = build_sweep_job(
            [a.key for a in sweeps.values()], cron_schedule=sweep_cron, schedule=schedule,
            job_name=_names(translator, SWEEP_JOB), schedule_name=_names(translator, SWEEP_SCHEDULE),
        )  # fmt: skip
        jobs.append(job)
        schedules.extend(sweep_schedules)
    return dg.Definitions(
        assets=[*assets.values(), *sweeps.values()], schedules=schedules, jobs=jobs, resources=dict(resources or {})
    )


def build_activation_definitions(
    profiles_table: str = PROFILES_ENRICHED,
    audience_table: str = VIP_AUDIENCE,
    *,
    profile_columns: ProfileColumns | None = None,
    audience_columns: ProfileColumns | None = None,
    list_id: str | None = None,
    list_name: str | None = None,
    known_profiles_table: str | None = None,
    source_schema: str = "klaviyo",
    include_demo_models: bool = False,
    vip_min_orders: int = 3,
    vip_list_name: str = DEFAULT_VIP_LIST,
    updated_columns: Mapping[str, str | None] | None = None,
    sensor_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    sensor_minimum_interval_seconds: int = 60,
    schedule_cron: str = "0 * * * *",
    schedule_default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    resources: Mapping[str, Any] | None = None,
    translator: DagsterKlaviyoTranslator | None = None,
    klaviyo_resource_key: str = "klaviyo",
    warehouse_resource_key: str = "warehouse",
    upstream: Sequence[dg.AssetKey] | None = None,
    **more_activations: Any,
) -> dg.Definitions:
    """Activation assets, inputs, job ``klaviyo_activation_job``, table-change sensor and hourly schedule
    (both STOPPED: writing to a Klaviyo account is switched on deliberately).

    ``updated_columns`` maps a watched table to its updated-at column for a cheap sensor fingerprint
    (default: content hash). Demo models are off unless ``include_demo_models`` (`make demo`, `make dev`).
    """
    translator = translator or DagsterKlaviyoTranslator()
    catalog, _ = _warehouse_facts(resources, warehouse_resource_key)
    assets = build_activation_assets(
        profiles_table, audience_table, profile_columns=profile_columns, audience_columns=audience_columns,
        list_id=list_id, list_name=list_name, known_profiles_table=known_profiles_table,
        source_schema=source_schema, include_demo_models=include_demo_models, vip_min_orders=vip_min_orders,
        vip_list_name=vip_list_name, translator=translator, klaviyo_resource_key=klaviyo_resource_key,
        warehouse_resource_key=warehouse_resource_key, catalog=catalog, upstream=upstream,
        **more_activations,  # events_table, consent_table, deletions_table (+ their columns): see build_activation_assets
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
