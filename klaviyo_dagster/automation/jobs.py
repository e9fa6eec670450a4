"""Named ingest jobs, one backfill policy each, and the snapshot schedule.

- ``klaviyo_ingest_incremental_job``: the incremental objects (profiles, events, campaigns, flows,
  templates), daily partitions, every asset with ``BackfillPolicy.single_run()``: a range is one run.
- ``klaviyo_ingest_snapshots_job``: the snapshot objects (lists, segments, metrics, list and segment
  memberships), unpartitioned: one run captures the current state.
Schedules target these jobs by name (``klaviyo_ingest_daily`` the incremental one, ``klaviyo_snapshots_daily``
the snapshot one), so the UI lists them under Jobs and no anonymous job mixes backfill policies.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

INCREMENTAL_JOB = "klaviyo_ingest_incremental_job"
SNAPSHOTS_JOB = "klaviyo_ingest_snapshots_job"
SNAPSHOT_SCHEDULE = "klaviyo_snapshots_daily"


def build_ingest_jobs(
    assets: Sequence[dg.AssetsDefinition], *, incremental_name: str = INCREMENTAL_JOB,
    snapshots_name: str = SNAPSHOTS_JOB,
) -> tuple[dg.UnresolvedAssetJobDefinition | None, dg.UnresolvedAssetJobDefinition | None]:
    """(incremental job, snapshots job) over ``assets``; None where there is no such asset."""
    incremental = [a.key for a in assets if a.partitions_def is not None]
    snapshots = [a.key for a in assets if a.partitions_def is None]
    inc_job = dg.define_asset_job(
        incremental_name, selection=incremental,
        description="Incremental Klaviyo objects, daily partitions; a partition range is one run "
        "(single-run backfill policy).",
    ) if incremental else None  # fmt: skip
    snap_job = dg.define_asset_job(
        snapshots_name, selection=snapshots,
        description="Snapshot Klaviyo objects (lists, segments, metrics, memberships): one run captures "
        "their current state into today's capture.",
    ) if snapshots else None  # fmt: skip
    return inc_job, snap_job


def build_snapshot_schedule(
    job: dg.UnresolvedAssetJobDefinition, cron_schedule: str, *, name: str = SNAPSHOT_SCHEDULE,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """Capture every snapshot object once a day."""
    return dg.ScheduleDefinition(
        name=name, job=job, cron_schedule=cron_schedule, execution_timezone="UTC", default_status=default_status,
        description="Daily capture of Klaviyo's current lists, segments, metrics and memberships.",
    )  # fmt: skip
