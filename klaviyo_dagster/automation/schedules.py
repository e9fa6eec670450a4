"""The daily ingest schedule: yesterday's partition of every ingest asset, plus a lookback of late events.

Each tick asks for two runs: (1) every ingest asset except events, partition = yesterday (the last
complete UTC day at the tick's time); (2) events over a single-run range from ``lookback_days`` days
before yesterday through yesterday, so events Klaviyo reports late are picked up (re-materializing a
partition replaces it, so re-reading is safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import dagster as dg

UTC = timezone.utc
# Dagster's documented run tags for a single-run partition range (public strings, no private import).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
SCHEDULE_NAME = "klaviyo_ingest_daily"
DEFAULT_CRON = "15 2 * * *"  # 02:15 UTC: a little after midnight so yesterday is complete
DEFAULT_LOOKBACK_DAYS = 7  # Estuary measured events arriving more than 4 days late and re-reads 7
# Reporting API assets (ingest/reports.py): their own job and daily schedule, yesterday's partition.
REPORTING_JOB = "klaviyo_reporting_job"
REPORTING_SCHEDULE = "klaviyo_reporting_daily"
DEFAULT_REPORT_CRON = "45 2 * * *"  # after the ingest schedule
# Days before yesterday the reports re-read: conversions are attributed to a send for days after it (and
# events arrive late), so a day's values keep changing for a while. 3 costs 4 requests a day per values
# report (of 225) and 1 for the series.
DEFAULT_REPORT_LOOKBACK_DAYS = 3


def build_ingest_schedule(
    asset_keys: Sequence[dg.AssetKey],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    *,
    lookback_key: dg.AssetKey | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    cron_schedule: str = DEFAULT_CRON,
    name: str = SCHEDULE_NAME,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    job: dg.UnresolvedAssetJobDefinition | None = None,
) -> dg.ScheduleDefinition:
    """A schedule materializing yesterday's partitions of ``asset_keys``; ``lookback_key`` (events) is
    re-read from ``lookback_days`` days before yesterday through yesterday in one run. With ``job`` (the
    named incremental job) the schedule targets it by name; otherwise it targets the asset selection."""
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    keys = list(asset_keys)
    daily = [k for k in keys if k != lookback_key]

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        **({"job": job} if job is not None else {"target": dg.AssetSelection.assets(*keys)}),
        default_status=default_status,
        description=(
            "Daily Klaviyo ingest: yesterday's partition of every object"
            + (
                f", and {lookback_key.to_user_string()} re-read over the {lookback_days} days before it"
                if lookback_key in keys
                else ""
            )
            + "."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        # Yesterday is the last complete UTC day at the tick (the partitions also hold today, still open).
        day_start = tick.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        last_start = day_start - timedelta(days=1)
        if last_start < partitions_def.start:
            return dg.SkipReason(f"no complete daily partition yet at {tick.isoformat()}")
        yesterday = partitions_def.get_partition_key_for_timestamp(last_start.timestamp())
        first_dt = max(last_start - timedelta(days=lookback_days), partitions_def.start)
        first = partitions_def.get_partition_key_for_timestamp(first_dt.timestamp())
        requests = []
        if daily:
            requests.append(
                dg.RunRequest(run_key=f"{name}:{yesterday}", asset_selection=daily, partition_key=yesterday)
            )
        if lookback_key is not None and lookback_key in keys:
            requests.append(
                dg.RunRequest(
                    run_key=f"{name}:{lookback_key.to_user_string()}:{first}...{yesterday}",
                    asset_selection=[lookback_key],
                    tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: yesterday},
                )
            )
        return requests

    return _schedule


def build_report_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    *,
    lookback_days: int = DEFAULT_REPORT_LOOKBACK_DAYS,
    cron_schedule: str = DEFAULT_REPORT_CRON,
    name: str = REPORTING_SCHEDULE,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """The reporting job over ``lookback_days`` days before yesterday through yesterday, as one single-run
    range (the report assets plan one request per day, a series one for the whole range)."""
    if lookback_days < 0:
        raise ValueError(f"report_lookback_days must be >= 0, got {lookback_days}")

    @dg.schedule(
        name=name, cron_schedule=cron_schedule, execution_timezone="UTC", job=job, default_status=default_status,
        description=f"Daily Klaviyo reports: yesterday and the {lookback_days} days before it (late attribution).",
    )  # fmt: skip
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | dg.RunRequest:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        last_start = tick.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        if last_start < partitions_def.start:
            return dg.SkipReason(f"no complete daily partition yet at {tick.isoformat()}")
        last = partitions_def.get_partition_key_for_timestamp(last_start.timestamp())
        first_dt = max(last_start - timedelta(days=lookback_days), partitions_def.start)
        first = partitions_def.get_partition_key_for_timestamp(first_dt.timestamp())
        return dg.RunRequest(run_key=f"{name}:{first}...{last}",
                             tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})

    return _schedule


SWEEP_JOB = "klaviyo_deletion_sweep"
SWEEP_SCHEDULE = "klaviyo_deletion_sweep_weekly"
DEFAULT_SWEEP_CRON = "0 4 * * 0"  # Sundays 04:00 UTC: every id of each deletable object, once a week


def build_sweep_job(
    asset_keys: Sequence[dg.AssetKey],
    *,
    cron_schedule: str = DEFAULT_SWEEP_CRON,
    job_name: str = SWEEP_JOB,
    schedule_name: str = SWEEP_SCHEDULE,
    schedule: bool = True,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> tuple[dg.UnresolvedAssetJobDefinition, list[dg.ScheduleDefinition]]:
    """The deletion sweep job over ``asset_keys`` (the ``<object>_deleted`` assets) and its weekly schedule."""
    job = dg.define_asset_job(
        job_name, selection=list(asset_keys),
        description="Find what Klaviyo deleted: read every id of each deletable object and record the missing ones.",
    )  # fmt: skip
    schedules = []
    if schedule:
        schedules.append(dg.ScheduleDefinition(
            name=schedule_name, job=job, cron_schedule=cron_schedule, execution_timezone="UTC",
            default_status=default_status,
            description=f"Deletion sweep ({cron_schedule} UTC): ids Klaviyo no longer has leave the _current views.",
        ))  # fmt: skip
    return job, schedules

