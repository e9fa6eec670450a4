"""Deletion sweeps: for each entry with ``sweep=Sweep(...)``, asset ``klaviyo/<object>_deleted``.

The asset reads every id of the object (its passes without a window, with the sweep's small sparse
fieldset and none of the optional fields), stages them in ``klaviyo.<object>_sweep`` and records in
``klaviyo.<object>_deleted`` the held ids the sweep no longer saw (warehouse/deletions.py); the
``_current`` views leave those out. A job ``klaviyo_deletion_sweep`` runs every sweep, weekly by default.
"""


import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from klaviyo_dagster.client import KlaviyoError
from klaviyo_dagster.ingest.fetch import FetchOptions, plan_passes
from klaviyo_dagster.ingest.objects import KlaviyoObject
from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.warehouse.deletions import SweepRefused, record_sweep

UTC = timezone.utc
SWEEP_JOB = "klaviyo_deletion_sweep"
SWEEP_SCHEDULE = "klaviyo_deletion_sweep_weekly"


def sweep_key(obj: KlaviyoObject) -> dg.AssetKey:
    return dg.AssetKey(["klaviyo", f"{obj.name}_deleted"])


def iter_ids(client: Any, obj: KlaviyoObject, options: FetchOptions, chunk: int = 10_000) -> Iterator[list[str]]:
    """Every id of ``obj``, in chunks (one pass per fan-out value, no window, sparse fields only)."""
    assert obj.sweep is not None
    reader = dataclasses.replace(
        obj, sync="snapshot", cursor=None, params=dict(obj.sweep.params), additional_fields=()
    )
    buf: list[str] = []
    for one in plan_passes(client, reader, None, options):
        for doc in client.paginate(one.path, one.params, tier=one.tier):
            buf.extend(str(r["id"]) for r in doc.get("data") or ())
            if len(buf) >= chunk:
                yield buf
                buf = []
    if buf:
        yield buf


def build_sweep_asset(obj: KlaviyoObject, options: FetchOptions, max_deleted_share: float) -> dg.AssetsDefinition:
    """``klaviyo/<object>_deleted`` for one swept entry."""

    @dg.asset(
        key=sweep_key(obj),
        deps=[dg.AssetKey(["klaviyo", obj.name])],
        description=f"Ids of `klaviyo.{obj.name}` that Klaviyo deleted, found by a periodic sweep of every id "
        f"(weekly by default); `klaviyo.{obj.name}_current` leaves them out.",
        pool=KLAVIYO_POOL,
        group_name="klaviyo_ingest",
        kinds={"klaviyo", "duckdb"},
        required_resource_keys={"klaviyo", "warehouse"},
        metadata={"table": f"klaviyo.{obj.name}_deleted", "swept_table": f"klaviyo.{obj.name}"},
    )
    def _sweep(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = datetime.now(UTC)
        warehouse = context.resources.warehouse.get_warehouse()
        try:
            with context.resources.klaviyo.get_client(context.log) as client:
                result = record_sweep(
                    warehouse, obj.name, obj.primary_key[0], obj.cursor_column, started,
                    iter_ids(client, obj, options), max_share=max_deleted_share,
                )  # fmt: skip
                stats = client.stats.snapshot()
        except SweepRefused as exc:
            raise dg.Failure(description=f"{obj.name} sweep: {exc}", allow_retries=False) from exc
        except KlaviyoError as exc:
            raise dg.Failure(description=f"{obj.name} sweep: {exc} Nothing was recorded; re-run the sweep.") from exc
        context.log.info(
            f"{obj.name}: sweep saw {result.seen} of {result.held} held ids; {result.newly_deleted} newly "
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


def build_sweeps(
    objects: Sequence[KlaviyoObject], options: FetchOptions, *, cron: str | None = None,
    max_deleted_share: float = 0.5, schedule: bool = True,
) -> tuple[list[dg.AssetsDefinition], list[dg.JobDefinition], list[dg.ScheduleDefinition]]:
    """Sweep assets of the swept ``objects``, their job and its schedule (weekly unless ``cron``)."""
    swept = [o for o in objects if o.sweep is not None]
    if not swept:
        return [], [], []
    assets = [build_sweep_asset(o, options, max_deleted_share) for o in swept]
    job = dg.define_asset_job(SWEEP_JOB, selection=[sweep_key(o) for o in swept],
                              description="Find what Klaviyo deleted: sweep every id of the swept objects.")
    schedules = []
    if schedule:
        schedules.append(dg.ScheduleDefinition(
            name=SWEEP_SCHEDULE, job=job, cron_schedule=cron or swept[0].sweep.cron,  # type: ignore[union-attr]
            execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
        ))  # fmt: skip
    return assets, [job], schedules
