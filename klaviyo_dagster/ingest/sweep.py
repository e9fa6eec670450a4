"""Deletion sweeps: for each entry with ``sweep=Sweep(...)``, asset ``klaviyo/<object>_deleted``.

The asset reads every id of the object (its passes without a window, with the sweep's small sparse
fieldset and none of the optional fields), stages them in ``klaviyo.<object>_sweep`` and records in
``klaviyo.<object>_deleted`` the held ids the sweep no longer saw (warehouse/deletions.py); the
``_current`` views leave those out. The job and its weekly schedule live in automation/.
"""


import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from klaviyo_dagster.client import KlaviyoError
from klaviyo_dagster.ingest.assets import IngestSettings, asset_key
from klaviyo_dagster.ingest.fetch import FetchOptions, plan_passes
from klaviyo_dagster.ingest.objects import KlaviyoObject
from klaviyo_dagster.translator import KlaviyoAssetProps
from klaviyo_dagster.warehouse.deletions import SweepRefused, record_sweep

UTC = timezone.utc


def iter_ids(client: Any, obj: KlaviyoObject, options: FetchOptions, chunk: int = 10_000) -> Iterator[list[str]]:
    """Every id of ``obj``, in chunks (one pass per fan-out value, no window, sparse fields only)."""
    assert obj.sweep is not None
    reader = dataclasses.replace(
        obj, sync="snapshot", cursor=None, params=dict(obj.sweep.params), additional_fields=()
    )
    buf: list[str] = []
    for one in plan_passes(client, reader, None, FetchOptions(fan_out=options.fan_out)):
        for doc in client.paginate(one.path, one.params, tier=one.tier):
            buf.extend(str(r["id"]) for r in doc.get("data") or ())
            if len(buf) >= chunk:
                yield buf
                buf = []
    if buf:
        yield buf


def sweep_key(obj: KlaviyoObject, settings: IngestSettings) -> dg.AssetKey:
    """``<prefix>/<object>_deleted`` beside the object's own asset (``klaviyo/profiles_deleted``)."""
    path = asset_key(obj, settings.translator).path
    return dg.AssetKey([*path[:-1], f"{path[-1]}_deleted"])


def build_sweep_asset(obj: KlaviyoObject, settings: IngestSettings, max_deleted_share: float) -> dg.AssetsDefinition:
    """``klaviyo/<object>_deleted`` for one swept entry."""

    # Through the translator like every other asset (owners, tags, groups, automation from YAML apply here
    # too); the key stays beside the object's own, whatever the translator made of that one.
    spec = settings.translator.get_asset_spec(KlaviyoAssetProps(
        role="ingest",
        name=f"{obj.name}_deleted",
        description=f"Ids of `{obj.name}` that Klaviyo deleted, found by a periodic sweep of every id "
        f"(weekly by default); `{obj.name}_current` leaves them out.",
        table=settings.table_name(f"{obj.name}_deleted"),
        deps=(asset_key(obj, settings.translator),),
        metadata={"klaviyo/api_path": obj.path, "klaviyo/sync_mode": "sweep"},
    )).replace_attributes(key=sweep_key(obj, settings))

    @dg.asset(
        key=spec.key,
        deps=spec.deps,
        description=spec.description,
        pool=settings.pool,
        group_name=spec.group_name,
        owners=spec.owners,
        tags=spec.tags,
        kinds=spec.kinds,
        automation_condition=spec.automation_condition,
        required_resource_keys={settings.klaviyo_resource_key, settings.warehouse_resource_key},
        metadata=spec.metadata,
    )
    def _sweep(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = datetime.now(UTC)
        resources = context.resources
        warehouse = getattr(resources, settings.warehouse_resource_key).get_warehouse(settings.schema)
        try:
            with getattr(resources, settings.klaviyo_resource_key).get_client(context.log) as client:
                result = record_sweep(
                    warehouse, obj.name, obj.primary_key[0], obj.cursor_column, started,
                    iter_ids(client, obj, settings.options), max_share=max_deleted_share,
                )  # fmt: skip
                stats = client.stats.snapshot()
        except SweepRefused as exc:
            raise dg.Failure(description=f"{obj.name} sweep: {exc}", allow_retries=False) from exc
        except KlaviyoError as exc:
            raise dg.Failure(description=f"{obj.name} sweep: {exc} Nothing was recorded; re-run the sweep.") from exc
        context.log.info(
            f"{obj.name}: sweep saw {result.seen} ids ({result.held} held); {result.newly_deleted} newly "
            f"deleted, {result.restored} seen again, {result.deleted_total} deleted in all "
            f"({stats['requests']} requests)"
        )
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(result.deleted_total),
            "seen": dg.MetadataValue.int(result.seen),
            "held": dg.MetadataValue.int(result.held),
            "newly_deleted": dg.MetadataValue.int(result.newly_deleted),
            "seen_again": dg.MetadataValue.int(result.restored),
            "requests": dg.MetadataValue.int(stats["requests"]),
            "swept_at": dg.MetadataValue.text(started.isoformat()),
        })  # fmt: skip

    return _sweep
