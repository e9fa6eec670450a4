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
from klaviyo_dagster.ingest.fetch import FetchOptions
from klaviyo_dagster.ingest.objects import OBJECTS, KlaviyoObject, get_object
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
    """The build options every ingest (and deletion sweep) asset shares: defined once, here.

    - ``event_metrics``: metric ids or names; events are then read one pass per metric (default: all).
    - ``profile_subscriptions`` / ``profile_predictive_analytics``: request those profile fields
      (predictive analytics moves /api/profiles to a slower rate-limit bucket).
    - ``campaign_channels``, ``include_archived``: campaign/flow passes.
    - ``chunk_rows``: rows staged per chunk.
    - ``translator``: keys, groups, owners, tags, automation (`DagsterKlaviyoTranslator`).
    - ``klaviyo_resource_key`` / ``warehouse_resource_key`` / ``schema``: which account, which warehouse and
      which schema (None: the warehouse resource's; ``default_schema`` and ``catalog`` name it in metadata).
    """

    event_metrics: Sequence[str] | None = None
    profile_subscriptions: bool = True
    profile_predictive_analytics: bool = False
    campaign_channels: Sequence[str] = CAMPAIGN_CHANNELS
    include_archived: bool = True
    chunk_rows: int = 10_000
    translator: DagsterKlaviyoTranslator | None = None
    klaviyo_resource_key: str = "klaviyo"
    warehouse_resource_key: str = "warehouse"
    schema: str | None = None
    default_schema: str = "klaviyo"
    catalog: str = "warehouse"

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
            ]
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


def _options(options: dict[str, Any]) -> IngestOptions:
    """`IngestOptions` from keyword arguments; an unknown name is a TypeError naming the known ones."""
    unknown = sorted(set(options) - {f.name for f in fields(IngestOptions)})
    if unknown:
        raise TypeError(f"unknown ingest option(s) {', '.join(unknown)}; known: "
                        f"start_date, objects, {', '.join(f.name for f in fields(IngestOptions))}")
    return IngestOptions(**options)


def build_ingest_assets(
    *,
    start_date: str | date | datetime = DEFAULT_START_DATE,
    objects: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, dg.AssetsDefinition]:
    """``{object name: asset}`` for the chosen objects.

    - ``start_date``: first daily partition (UTC).
    - ``objects``: names to ingest (default: all of `OBJECTS`).
    - ``options``: the fields of `IngestOptions` (``event_metrics``, ``profile_subscriptions``,
      ``profile_predictive_analytics``, ``campaign_channels``, ``include_archived``, ``chunk_rows``,
      ``translator``, ``klaviyo_resource_key``, ``warehouse_resource_key``, ``schema``, ``default_schema``,
      ``catalog``).
    """
    chosen = [get_object(n) for n in objects] if objects is not None else list(OBJECTS)
    settings = _options(options).settings()
    partitions_def = daily_partitions(start_date)
    return {obj.name: build_ingest_asset(obj, partitions_def, settings) for obj in chosen}


def build_sweep_assets(
    *,
    objects: Sequence[str] | None = None,
    max_deleted_share: float = 0.5,
    **options: Any,
) -> dict[str, dg.AssetsDefinition]:
    """``{object name: asset}``: the deletion sweep ``klaviyo/<object>_deleted`` of every chosen object that
    Klaviyo can delete from (entries with ``sweep``: profiles, campaigns, flows, templates). ``options``
    as `build_ingest_assets` (`IngestOptions`: channels, archived, translator, resource keys, schema;
    ``start_date`` is ignored); a sweep that would mark more than ``max_deleted_share`` of the held ids
    deleted is refused."""
    chosen = [get_object(n) for n in objects] if objects is not None else list(OBJECTS)
    options.pop("start_date", None)
    settings = _options(options).settings()
    return {o.name: build_sweep_asset(o, settings, max_deleted_share) for o in chosen if o.sweep is not None}
