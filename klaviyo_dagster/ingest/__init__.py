"""Ingest: every Klaviyo object as a partitioned Dagster asset landing in the warehouse.

``build_ingest_assets()`` returns the assets (with checks), one per object, keyed by object name. The daily
schedule and the `Definitions` around them are built one layer up (``klaviyo_dagster.build_ingest_definitions``
in `factories.py`, which uses `automation/`): ingest never imports automation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

import dagster as dg

from klaviyo_dagster.ingest.assets import (
    GROUP,
    POOL,
    IngestSettings,
    asset_key,
    build_ingest_asset,
)
from klaviyo_dagster.ingest.derived import build_derived_asset
from klaviyo_dagster.ingest.fetch import FetchOptions
from klaviyo_dagster.ingest.objects import OBJECTS, REPORTS, KlaviyoObject, get_object
from klaviyo_dagster.ingest.reports import DEFAULT_CONVERSION_METRIC, ReportOptions, build_report_asset
from klaviyo_dagster.ingest.sweep import build_sweep_asset
from klaviyo_dagster.translator import DagsterKlaviyoTranslator

DEFAULT_START_DATE = "2024-01-01"
CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")

__all__ = [
    "CAMPAIGN_CHANNELS",
    "DEFAULT_START_DATE",
    "GROUP",
    "OBJECTS",
    "POOL",
    "REPORTS",
    "IngestOptions",
    "IngestSettings",
    "KlaviyoObject",
    "asset_key",
    "build_ingest_assets",
    "build_sweep_assets",
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


@dataclass(frozen=True)
class IngestOptions:
    """The build options of the ingest assets (the deletion sweeps take them too, reports aside): defined once.

    - ``event_metrics``: metric ids or names; events are then read one pass per metric (default: all).
    - ``profile_subscriptions`` / ``profile_predictive_analytics``: request those profile fields
      (predictive analytics moves /api/profiles to a slower rate-limit bucket).
    - ``list_profile_count`` / ``segment_profile_count``: add ``profile_count`` to the lists (segments)
      snapshot, one ``GET /api/lists/{id}`` per list on its 1/s, 15/m tier (N lists: about N/15 minutes).
    - ``campaign_channels``, ``include_archived``: campaign/flow passes.
    - ``chunk_rows``: rows staged per chunk.
    - ``translator``: keys, groups, owners, tags, automation (`DagsterKlaviyoTranslator`).
    - ``klaviyo_resource_key`` / ``warehouse_resource_key`` / ``schema``: which account, which warehouse and
      which schema (None: the warehouse resource's; ``default_schema`` and ``catalog`` name it in metadata).
    - ``reports``: the Reporting API assets too (`REPORTS`: ``campaign_values``, ``flow_values``,
      ``flow_series``; True for all, or names); they may also be named in ``objects``. Off by default:
      225 requests a day per account bound how much history they can read (ingest/reports.py).
      ``conversion_metric`` (a metric name or id, default Placed Order) and ``report_statistics``
      (default: the entry's counts and values) shape their queries.
    """

    event_metrics: Sequence[str] | None = None
    profile_subscriptions: bool = True
    profile_predictive_analytics: bool = False
    list_profile_count: bool = False
    segment_profile_count: bool = False
    campaign_channels: Sequence[str] = CAMPAIGN_CHANNELS
    include_archived: bool = True
    chunk_rows: int = 10_000
    translator: DagsterKlaviyoTranslator | None = None
    klaviyo_resource_key: str = "klaviyo"
    warehouse_resource_key: str = "warehouse"
    schema: str | None = None
    default_schema: str = "klaviyo"
    catalog: str = "warehouse"
    reports: bool | Sequence[str] = False
    conversion_metric: str = DEFAULT_CONVERSION_METRIC
    report_statistics: Sequence[str] | None = None

    @classmethod
    def of(cls, options: dict[str, Any]) -> IngestOptions:
        """From keyword arguments; an unknown name is a TypeError naming the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown ingest option(s) {', '.join(unknown)}; known: start_date, objects, "
                            f"{', '.join(known)}")
        return cls(**options)

    def settings(self) -> IngestSettings:
        """The `IngestSettings` the asset builders take (channels checked, fan-out and extra fields derived)."""
        channels = tuple(self.campaign_channels)
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
                    ("subscriptions", self.profile_subscriptions),
                    ("predictive_analytics", self.profile_predictive_analytics),
                )
                if on
            ],
            "lists": ["profile_count"] if self.list_profile_count else [],
            "segments": ["profile_count"] if self.segment_profile_count else [],
        }
        fan_out: dict[str, Sequence[str] | None] = {
            "event_metrics": tuple(self.event_metrics) if self.event_metrics else None,
            "campaign_channels": channels,
            "archived": ("false", "true") if self.include_archived else ("false",),
        }
        translator = self.translator or DagsterKlaviyoTranslator()
        return IngestSettings(
            options=FetchOptions(fan_out=fan_out, additional_fields=additional),
            chunk_rows=self.chunk_rows,
            translator=translator,
            klaviyo_resource_key=self.klaviyo_resource_key,
            warehouse_resource_key=self.warehouse_resource_key,
            schema=self.schema,
            default_schema=self.default_schema,
            catalog=self.catalog,
            pool=POOL if translator.name_prefix == "klaviyo" else f"{translator.name_prefix}_api",
        )


def build_ingest_assets(
    *,
    start_date: str | date | datetime = DEFAULT_START_DATE,
    objects: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, dg.AssetsDefinition]:
    """``{object name: asset}`` for the chosen objects.

    - ``start_date``: first daily partition (UTC).
    - ``objects``: names to ingest (default: all of `OBJECTS`).
    - ``options``: the fields of `IngestOptions` (event metrics, profile fields, profile counts, campaign
      channels, archived, chunk rows, translator, resource keys, schema, reports).
    """
    o = IngestOptions.of(options)
    switches = {"profile_subscriptions": o.profile_subscriptions,
                "profile_predictive_analytics": o.profile_predictive_analytics}
    chosen = [get_object(n) for n in objects] if objects is not None else [
        e for e in OBJECTS if e.derived is None or e.derived.needs is None or switches.get(e.derived.needs)
    ]
    for e in chosen:
        if e.derived is not None and e.derived.needs is not None and not switches.get(e.derived.needs):
            raise ValueError(f"{e.name} is derived from {e.derived.source}' {e.derived.needs.split('_', 1)[1]}, "
                             f"which {e.derived.needs}=False leaves out: set {e.derived.needs}=True or leave "
                             f"{e.name} out of objects")
    if o.reports:
        names = [r.name for r in REPORTS] if o.reports is True else list(o.reports)  # type: ignore[arg-type]
        wrong = [n for n in names if get_object(n).report is None]
        if wrong:
            raise ValueError(f"reports: {wrong} are not reports; choose from {', '.join(r.name for r in REPORTS)}")
        chosen += [get_object(n) for n in names if n not in {e.name for e in chosen}]
    settings = o.settings()
    partitions_def = daily_partitions(start_date)
    report_options = ReportOptions(o.conversion_metric, tuple(o.report_statistics) if o.report_statistics else None)
    return {
        obj.name: build_report_asset(obj, partitions_def, settings, report_options) if obj.report is not None
        else build_derived_asset(obj, settings) if obj.derived is not None
        else build_ingest_asset(obj, partitions_def, settings)
        for obj in chosen
    }


def build_sweep_assets(
    *,
    objects: Sequence[str] | None = None,
    max_deleted_share: float = 0.5,
    **options: Any,
) -> dict[str, dg.AssetsDefinition]:
    """``{object name: asset}``: the deletion sweep ``klaviyo/<object>_deleted`` of every chosen object that
    Klaviyo can delete from (entries with ``sweep``: profiles, campaigns, flows, templates). ``options``
    as `build_ingest_assets` (`IngestOptions`; ``start_date`` and the report options do not apply); a sweep
    that would mark more than ``max_deleted_share`` of the held ids deleted is refused."""
    chosen = [get_object(n) for n in objects] if objects is not None else list(OBJECTS)
    options.pop("start_date", None)
    settings = IngestOptions.of(options).settings()
    return {o.name: build_sweep_asset(o, settings, max_deleted_share) for o in chosen if o.sweep is not None}
