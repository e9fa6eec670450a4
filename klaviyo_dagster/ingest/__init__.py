"""Ingest: every Klaviyo object as a partitioned Dagster asset landing in the warehouse.

``build_ingest_definitions()`` returns the assets (with checks) and the daily schedule; resources
``klaviyo`` (KlaviyoResource) and ``warehouse`` (WarehouseResource) are supplied by the caller (or via
``resources=``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from klaviyo_dagster.automation.schedules import DEFAULT_CRON, DEFAULT_LOOKBACK_DAYS, build_ingest_schedule
from klaviyo_dagster.ingest.assets import (
    GROUP,
    POOL,
    IngestSettings,
    asset_key,
    build_ingest_assets,
)
from klaviyo_dagster.ingest.fetch import FetchOptions
from klaviyo_dagster.ingest.objects import OBJECTS, KlaviyoObject, get_object
from klaviyo_dagster.ingest.sweep import build_sweeps

DEFAULT_START_DATE = "2024-01-01"
CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")

__all__ = [
    "GROUP",
    "OBJECTS",
    "POOL",
    "KlaviyoObject",
    "asset_key",
    "build_ingest_definitions",
    "daily_partitions",
    "get_object",
]


def daily_partitions(start_date: str | date | datetime = DEFAULT_START_DATE) -> dg.DailyPartitionsDefinition:
    """UTC daily partitions from ``start_date`` through today.

    Today's partition is included (``end_offset=1``): it holds what Klaviyo has so far (windows never pass
    now) and is replaced by the next run, so a change made in Klaviyo today can be read back today. The
    daily schedule materializes yesterday, the last complete day.
    """
    if isinstance(start_date, datetime):
        start_date = start_date.date()
    if isinstance(start_date, date):
        start_date = start_date.isoformat()
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=1)


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
    deletion_sweeps: bool = True,
    sweep_cron: str | None = None,
    max_deleted_share: float = 0.5,
    resources: Mapping[str, Any] | None = None,
) -> dg.Definitions:
    """Assets ``klaviyo/<object>`` (+ checks) and the daily ingest schedule.

    - ``start_date``: first daily partition (UTC).
    - ``objects``: names to ingest (default: all of `OBJECTS`).
    - ``event_metrics``: metric ids or names; events are then read one pass per metric (default: all).
    - ``profile_subscriptions`` / ``profile_predictive_analytics``: request those profile fields
      (predictive analytics moves /api/profiles to a slower rate-limit bucket).
    - ``campaign_channels``, ``include_archived``: campaign/flow passes.
    - ``lookback_days``: days before yesterday the schedule re-reads events for late arrivals.
    - ``snapshot_max_lag_days``: how long after its day a snapshot partition may still be captured.
    - ``deletion_sweeps``: assets ``klaviyo/<object>_deleted`` (profiles, campaigns, flows, templates) and job
      ``klaviyo_deletion_sweep`` with a schedule (``sweep_cron``, weekly by default); a sweep that would
      mark more than ``max_deleted_share`` of an object's ids deleted is refused.
    """
    chosen = [get_object(n) for n in objects] if objects is not None else list(OBJECTS)
    channels = tuple(campaign_channels)
    unknown = sorted(set(channels) - set(CAMPAIGN_CHANNELS))
    if unknown or not channels:
        raise ValueError(
            f"campaign_channels must be a non-empty selection of {', '.join(CAMPAIGN_CHANNELS)} "
            f"(Klaviyo requires one channel per campaigns request); got {list(channels)}"
        )
    additional = {
        "profiles": [
            name
            for name, on in (
                ("subscriptions", profile_subscriptions),
                ("predictive_analytics", profile_predictive_analytics),
            )
            if on
        ]
    }
    fan_out: dict[str, Sequence[str] | None] = {
        "event_metrics": tuple(event_metrics) if event_metrics else None,
        "campaign_channels": channels,
        "archived": ("false", "true") if include_archived else ("false",),
    }
    options = FetchOptions(fan_out=fan_out, additional_fields=additional)
    settings = IngestSettings(
        options=options,
        snapshot_max_lag=timedelta(days=snapshot_max_lag_days),
        chunk_rows=chunk_rows,
    )
    partitions_def = daily_partitions(start_date)
    assets = build_ingest_assets(chosen, partitions_def, settings)
    schedules = []
    if schedule and chosen:
        keys = [asset_key(o) for o in chosen]
        events = asset_key("events") if "events" in {o.name for o in chosen} else None
        schedules.append(
            build_ingest_schedule(
                keys,
                partitions_def,
                lookback_key=events,
                lookback_days=lookback_days,
                cron_schedule=cron_schedule,
            )
        )
    jobs: list[dg.JobDefinition] = []
    if deletion_sweeps:
        sweep_assets, jobs, sweep_schedules = build_sweeps(
            chosen, options, cron=sweep_cron, max_deleted_share=max_deleted_share, schedule=schedule
        )
        assets = [*assets, *sweep_assets]
        schedules.extend(sweep_schedules)
    return dg.Definitions(assets=assets, schedules=schedules, jobs=jobs, resources=dict(resources or {}))
