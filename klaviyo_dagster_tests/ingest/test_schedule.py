"""The daily ingest schedule targets yesterday's partitions and a lookback range of events."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from klaviyo_dagster.factories import build_ingest_definitions as _build
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource

UTC = timezone.utc
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def build_ingest_definitions(**kwargs) -> dg.Definitions:
    resources = {
        "klaviyo": KlaviyoResource(api_key="pk_unused"),
        "warehouse": WarehouseResource(database=":memory:"),
    }
    return _build(resources=resources, **kwargs)


def evaluate(defs: dg.Definitions, when: datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def("klaviyo_ingest_daily")
    with dg.build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        data = schedule.evaluate_tick(context)
    return list(data.run_requests or [])


def test_schedule_targets_yesterday_and_event_lookback() -> None:
    defs = build_ingest_definitions(start_date="2026-01-01")
    daily, events = evaluate(defs, datetime(2026, 3, 10, 2, 15, tzinfo=UTC))
    assert daily.partition_key == "2026-03-09"
    keys = {k.to_user_string() for k in daily.asset_selection}
    assert "klaviyo/events" not in keys
    assert keys == {
        "klaviyo/profiles", "klaviyo/campaigns", "klaviyo/flows", "klaviyo/templates",
        "klaviyo/campaign_messages", "klaviyo/flow_actions", "klaviyo/flow_messages"}
    assert daily.job_name is None  # the schedule's own job: klaviyo_ingest_incremental_job
    assert [k.to_user_string() for k in events.asset_selection] == ["klaviyo/events"]
    # 7 days of lookback by default: Estuary measured events arriving more than 4 days late.
    assert (events.tags[RANGE_START], events.tags[RANGE_END]) == ("2026-03-02", "2026-03-09")
    assert events.partition_key is None


def test_snapshots_have_their_own_daily_schedule() -> None:
    defs = build_ingest_definitions(start_date="2026-01-01")
    schedule = defs.resolve_schedule_def("klaviyo_snapshots_daily")
    assert schedule.job_name == "klaviyo_ingest_snapshots_job"
    assert schedule.cron_schedule == defs.resolve_schedule_def("klaviyo_ingest_daily").cron_schedule
    job = defs.resolve_job_def("klaviyo_ingest_snapshots_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "klaviyo/lists", "klaviyo/segments", "klaviyo/metrics", "klaviyo/list_memberships",
        "klaviyo/segment_memberships", "klaviyo/tags", "klaviyo/campaign_tags", "klaviyo/flow_tags",
        "klaviyo/list_tags", "klaviyo/segment_tags", "klaviyo/exclusions",
    }  # fmt: skip


def test_schedule_lookback_configurable_and_bounded_by_start_date() -> None:
    defs = build_ingest_definitions(start_date="2026-03-01", lookback_days=7, objects=["events", "profiles"])
    daily, events = evaluate(defs, datetime(2026, 3, 4, 23, 0, tzinfo=UTC))
    assert daily.partition_key == "2026-03-03"
    assert [k.to_user_string() for k in daily.asset_selection] == ["klaviyo/profiles"]
    assert (events.tags[RANGE_START], events.tags[RANGE_END]) == ("2026-03-01", "2026-03-03")

    defs = build_ingest_definitions(start_date="2026-03-01", lookback_days=0, objects=["events"])
    (events,) = evaluate(defs, datetime(2026, 3, 20, 2, 15, tzinfo=UTC))
    assert (events.tags[RANGE_START], events.tags[RANGE_END]) == ("2026-03-19", "2026-03-19")


def test_schedule_skips_before_first_partition() -> None:
    defs = build_ingest_definitions(start_date="2026-03-01")
    schedule = defs.resolve_schedule_def("klaviyo_ingest_daily")
    when = datetime(2026, 3, 1, 2, 15, tzinfo=UTC)
    with dg.build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as ctx:
        data = schedule.evaluate_tick(ctx)
    assert not data.run_requests and "no complete daily partition" in (data.skip_message or "")
