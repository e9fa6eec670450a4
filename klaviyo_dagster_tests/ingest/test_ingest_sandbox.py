"""Ingest assets end to end against the sandbox over HTTP: what lands in DuckDB equals the sandbox's truth.

One private sandbox for the module (faults are switched per test). Data spans the 30 days before now, so
partitions are recent days; the latest partition is today (still open).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import requests

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

UTC = timezone.utc
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
CURSORS = {
    "profiles": ("profile", "updated"),
    "events": ("event", "datetime"),
    "campaigns": ("campaign", "updated_at"),
    "flows": ("flow", "updated"),
    "templates": ("template", "updated"),
}


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    with run_sandbox(seed=42, scale="small", rate_limits="off") as h:
        yield h


@pytest.fixture
def faults(handle: Any) -> Iterator[Any]:
    yield handle.faults
    handle.faults.configure({"spec": ""})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wh" / "warehouse.duckdb"


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def key(day: datetime) -> str:
    return day.strftime("%Y-%m-%d")


def first_day(handle: Any) -> datetime:
    """First day holding data (the data spans the 30 days before now)."""
    return today() - timedelta(days=30)


def materialize(
    handle: Any,
    db: Path,
    name: str,
    *,
    partition: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    klaviyo: dict[str, Any] | None = None,
    **build: Any,
) -> dg.ExecuteInProcessResult:
    """Materialize ``klaviyo/<name>`` for one partition or a single-run range [start..end] (inclusive keys)."""
    build.setdefault("start_date", first_day(handle) - timedelta(days=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=[name], schedule=False, **build)
    settings = {"api_key": handle.api_key, "base_url": handle.base_url, "max_backoff": 0.05}
    settings.update(klaviyo or {})
    resources = {"klaviyo": KlaviyoResource(**settings), "warehouse": WarehouseResource(database=str(db))}
    kwargs: dict[str, Any] = {}
    if not get_object(name).incremental:
        pass  # snapshots are unpartitioned: a run captures the current state
    elif partition is not None:
        kwargs["partition_key"] = key(partition)
    else:
        assert start is not None and end is not None
        kwargs["tags"] = {RANGE_START: key(start), RANGE_END: key(end)}
    return dg.materialize(
        defs.assets,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


def metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(f"klaviyo__{name}")
    # A single-run range reports one materialization per partition, all with the run's metadata.
    return {k: v.value for k, v in mats[0].metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.is_failure:
            data = event.event_specific_data
            err = getattr(data, "error", None)
            texts.append(str(err.to_string() if err else data))
    return "\n".join(texts)


def checks_passed(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def ids_by_day(wh: Warehouse, table: str) -> Counter:
    rows = wh.query(f"SELECT id, _partition FROM {wh.qualified(table)}")
    return Counter((rid, part.date().isoformat()) for rid, part in rows)


def truth_by_day(handle: Any, name: str, start: datetime, end: datetime) -> Counter:
    rtype, field = CURSORS[name]
    out = Counter()
    for rec in handle.truth.records(rtype, field, start, end):
        stamp = datetime.fromisoformat(rec["attributes"][field]).astimezone(UTC)
        out[(rec["id"], stamp.date().isoformat())] += 1
    return out


# -- incremental objects -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CURSORS))
def test_single_run_backfill_lands_exactly_the_sandbox_records(handle: Any, db: Path, name: str) -> None:
    start, end = first_day(handle), today() - timedelta(days=1)
    result = materialize(handle, db, name, start=start, end=end)
    assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    expected = truth_by_day(handle, name, start, today())
    assert sum(expected.values()) > 0
    # Every record once, in the partition of its cursor's day.
    assert ids_by_day(wh, name) == expected
    md = metadata(result, name)
    # A fresh table: what this run wrote is the whole table.
    assert md["dagster/partition_row_count"] == md["dagster/row_count"] == sum(expected.values())
    api = md["api"]
    assert api["pages"] >= 1 and api["requests"] >= api["pages"] and api["throttled_429"] == 0
    assert md["dagster/table_name"] == f"warehouse.klaviyo.{name}"
    assert md["cursor_window"] == {"start": f"{key(start)}T00:00:00Z", "end": f"{key(today())}T00:00:00Z"}
    mats = result.asset_materializations_for_node(f"klaviyo__{name}")
    assert sorted(m.partition for m in mats) == [key(start + timedelta(days=i)) for i in range(30)]
    preview = md["preview"]
    assert 1 <= len(preview.records) <= 5 and preview.records[0].data["id"] in {i for i, _ in expected}
    schema = md["dagster/column_schema"]
    assert [c.name for c in schema.columns] == list(wh.columns(name))
    assert schema.constraints.other == ["PRIMARY KEY (id, _partition)"]
    assert checks_passed(result) == {
        "primary_key_unique": True,
        "primary_key_not_null": True,
        "cursor_in_partition": True,
    }
    # Timestamps are TIMESTAMPTZ, the partition column too; the _current view has one row per id.
    types = wh.columns(name)
    assert types[CURSORS[name][1]] == "TIMESTAMP WITH TIME ZONE" == types["_partition"]
    assert wh.query(f"SELECT count(*), count(DISTINCT id) FROM {wh.qualified(name + '_current')}") == [
        (len(expected), len(expected))
    ]


def test_campaigns_every_channel_and_archived(handle: Any, db: Path) -> None:
    start, end = first_day(handle), today() - timedelta(days=1)
    result = materialize(handle, db, "campaigns", start=start, end=end)
    assert result.success, failure_text(result)
    truth = {
        r["id"]: (r["channel"], r["attributes"]["archived"])
        for r in handle.truth.records("campaign", "updated_at", start, today())
    }
    wh = Warehouse(str(db))
    rows = wh.query(f"SELECT id, channel, archived FROM {wh.qualified('campaigns')}")
    got = {rid: (ch, arch) for rid, ch, arch in rows}
    assert got == truth
    assert {c for c, _ in truth.values()} == {"email", "sms", "mobile_push"}
    assert {a for _, a in truth.values()} == {True, False}
    # 3 channels x 2 archived values: one pass each.
    assert metadata(result, "campaigns")["api"]["pages"] >= 6


def test_events_profile_metric_ids_and_json_properties(handle: Any, db: Path) -> None:
    day = today() - timedelta(days=3)
    result = materialize(handle, db, "events", partition=day)
    assert result.success, failure_text(result)
    truth = {r["id"]: r for r in handle.truth.records("event", "datetime", day, day + timedelta(days=1))}
    wh = Warehouse(str(db))
    rows = wh.query(
        f"SELECT id, profile_id, metric_id, event_properties::VARCHAR, timestamp FROM {wh.qualified('events')}"
    )
    assert len(rows) == len(truth) > 0
    for rid, profile_id, metric_id, props, ts in rows:
        rec = truth[rid]
        assert profile_id == rec["relationships"]["profile"]["data"]["id"]
        assert metric_id == rec["relationships"]["metric"]["data"]["id"]
        assert orjson.loads(props) == rec["attributes"]["event_properties"]
        assert ts == rec["attributes"]["timestamp"]


def test_event_metric_selection_reads_one_pass_per_metric(handle: Any, db: Path) -> None:
    day = today() - timedelta(days=4)
    events = handle.truth.records("event", "datetime", day, day + timedelta(days=1))
    by_metric = Counter(e["relationships"]["metric"]["data"]["id"] for e in events)
    (m1, _), (m2, _) = by_metric.most_common(2)
    names = {m["id"]: m["attributes"]["name"] for m in handle.truth.records("metric")}
    result = materialize(handle, db, "events", partition=day, event_metrics=[names[m1], m2])
    assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    got = Counter(r[0] for r in wh.query(f"SELECT metric_id FROM {wh.qualified('events')}"))
    assert got == {m1: by_metric[m1], m2: by_metric[m2]}

    bad = materialize(handle, db, "events", partition=day, event_metrics=["No Such Metric"])
    assert not bad.success
    assert "'No Such Metric' is neither an id nor a name found at /api/metrics" in failure_text(bad)


def test_event_metrics_naming_a_custom_metric_read_its_member_metrics(handle: Any, db: Path) -> None:
    import requests

    day = today() - timedelta(days=3)
    headers = {"Authorization": f"Klaviyo-API-Key {handle.api_key}", "revision": "2026-07-15"}
    custom = requests.get(f"{handle.base_url}/api/custom-metrics", params={"include": "metrics"},
                          headers=headers, timeout=10).json()["data"]
    engagement = next(c for c in custom if c["attributes"]["name"] == "Email engagement")
    members = {m["id"] for m in engagement["relationships"]["metrics"]["data"]}
    assert len(members) == 2
    events = handle.truth.records("event", "datetime", day, day + timedelta(days=1))
    want = Counter(e["relationships"]["metric"]["data"]["id"] for e in events
                   if e["relationships"]["metric"]["data"]["id"] in members)
    # by name, and by id (Klaviyo refuses a custom metric's id in the metric_id filter itself)
    for selector in ("Email engagement", engagement["id"]):
        result = materialize(handle, db, "events", partition=day, event_metrics=[selector])
        assert result.success, failure_text(result)
        wh = Warehouse(str(db))
        got = Counter(r[0] for r in wh.query(f"SELECT metric_id FROM {wh.qualified('events')}"))
        assert got == want and sum(got.values()) > 0


def _midnight_record(handle: Any, rtype: str, field: str) -> tuple[str, datetime]:
    lo, hi = first_day(handle) + timedelta(days=2), today() - timedelta(days=2)
    for rec in handle.truth.records(rtype, field, lo, hi):
        stamp = datetime.fromisoformat(rec["attributes"][field]).astimezone(UTC)
        if stamp == stamp.replace(hour=0, minute=0, second=0, microsecond=0):
            return rec["id"], stamp
    raise AssertionError(f"the sandbox has no {rtype} stamped exactly at midnight")


@pytest.mark.parametrize("name", ["events", "profiles"])
def test_record_at_midnight_lands_in_exactly_one_partition(handle: Any, db: Path, name: str) -> None:
    rtype, field = CURSORS[name]
    rid, midnight = _midnight_record(handle, rtype, field)
    for day in (midnight - timedelta(days=1), midnight):
        result = materialize(handle, db, name, partition=day)
        assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    rows = wh.query(f"SELECT _partition FROM {wh.qualified(name)} WHERE id = ?", [rid])
    assert rows == [(midnight,)]
    assert ids_by_day(Warehouse(str(db)), name) == truth_by_day(
        handle, name, midnight - timedelta(days=1), midnight + timedelta(days=1)
    )


def test_reruns_and_overlapping_backfills_leave_no_duplicates(handle: Any, db: Path) -> None:
    day = today() - timedelta(days=6)
    for _ in range(2):
        assert materialize(handle, db, "events", partition=day).success
    result = materialize(handle, db, "events", start=day - timedelta(days=1), end=day + timedelta(days=1))
    assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    total, distinct = wh.query(f"SELECT count(*), count(DISTINCT id) FROM {wh.qualified('events')}")[0]
    expected = truth_by_day(handle, "events", day - timedelta(days=1), day + timedelta(days=2))
    assert total == distinct == sum(expected.values())
    assert ids_by_day(wh, "events") == expected
    # One more day: the run reports its own rows as partition_row_count and the table's as row_count.
    later = day + timedelta(days=3)
    md = metadata(materialize(handle, db, "events", partition=later), "events")
    written = sum(truth_by_day(handle, "events", later, later + timedelta(days=1)).values())
    assert md["dagster/partition_row_count"] == written > 0
    assert md["dagster/row_count"] == total + written


# -- failures ------------------------------------------------------------------------------------------
def test_survives_injected_429s_and_5xx(handle: Any, db: Path, faults: Any) -> None:
    day = today() - timedelta(days=8)
    faults.configure(
        {"spec": "GET /api/profiles=429:next1@1,GET /api/profiles=503:every3,GET /api/profiles=502:next1"}
    )
    result = materialize(handle, db, "profiles", start=day, end=day + timedelta(days=2))
    assert result.success, failure_text(result)
    assert ids_by_day(Warehouse(str(db)), "profiles") == truth_by_day(
        handle, "profiles", day, day + timedelta(days=3)
    )
    api = metadata(result, "profiles")["api"]
    assert api["throttled_429"] == 1 and api["retries"] >= 2 and api["errors_retried"] >= 2


def test_bad_key_fails_with_a_clear_message(handle: Any, db: Path) -> None:
    wrong = "pk_" + "0" * 34
    result = materialize(
        handle, db, "lists", partition=today() - timedelta(days=1), klaviyo={"api_key": wrong}
    )
    assert not result.success
    text = failure_text(result)
    assert "lists:" in text and ("401" in text or "API key" in text)
    assert "KLAVIYO_API_KEY" in text  # names the fix
    assert wrong not in text
    assert not Path(db).exists() or not Warehouse(str(db)).table_exists("lists")


def test_failed_run_leaves_the_previous_rows(handle: Any, db: Path, faults: Any) -> None:
    start, end = today() - timedelta(days=12), today() - timedelta(days=9)
    assert materialize(handle, db, "events", start=start, end=end).success
    wh = Warehouse(str(db))
    before = wh.query(f"SELECT id, _partition, _loaded_at FROM {wh.qualified('events')} ORDER BY id")
    assert len(before) > 1000  # several pages
    # The third events page fails with a 500 and no retries are allowed: the run dies mid-stream.
    faults.configure({"spec": "GET /api/events=500:every3"})
    failed = materialize(handle, db, "events", start=start, end=end, klaviyo={"max_retries": 0})
    assert not failed.success
    assert "500" in failure_text(failed) and "left as it was" in failure_text(failed)
    assert wh.query(f"SELECT id, _partition, _loaded_at FROM {wh.qualified('events')} ORDER BY id") == before
    faults.configure({"spec": ""})
    assert materialize(handle, db, "events", start=start, end=end).success
    assert wh.query(f"SELECT count(*) FROM {wh.qualified('events')}")[0][0] == len(before)


def test_schema_evolution_adds_missing_columns(handle: Any, db: Path) -> None:
    day = today() - timedelta(days=2)
    assert materialize(handle, db, "profiles", partition=day).success
    wh = Warehouse(str(db))
    # A table written by an older version of the package, without two of today's columns.
    wh.execute(f"DROP VIEW {wh.qualified('profiles_current')}")
    wh.execute(f"ALTER TABLE {wh.qualified('profiles')} DROP COLUMN predictive_analytics")
    wh.execute(f"ALTER TABLE {wh.qualified('profiles')} DROP COLUMN last_event_date")
    result = materialize(handle, db, "profiles", partition=day)
    assert result.success, failure_text(result)
    md = metadata(result, "profiles")
    assert md["columns_added"] == ["last_event_date", "predictive_analytics"]
    cols = wh.columns("profiles")
    # The Columns tab follows the table: the re-added columns are listed where the table now has them.
    assert [c.name for c in md["dagster/column_schema"].columns] == list(cols)
    assert list(cols)[-2:] == ["last_event_date", "predictive_analytics"]
    assert cols["last_event_date"] == "TIMESTAMP WITH TIME ZONE" and cols["predictive_analytics"] == "JSON"
    assert (
        wh.query(f"SELECT count(*) FROM {wh.qualified('profiles')} WHERE last_event_date IS NOT NULL")[0][0]
        > 0
    )


# -- snapshots -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,rtype", [("lists", "list"), ("segments", "segment"), ("metrics", "metric")])
def test_snapshot_captures_the_current_state_into_todays_partition(
    handle: Any, db: Path, name: str, rtype: str
) -> None:
    result = materialize(handle, db, name)
    assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    got = wh.query(f"SELECT id, _partition FROM {wh.qualified(name)}")
    assert sorted(r[0] for r in got) == sorted(r["id"] for r in handle.truth.records(rtype))
    assert {r[1] for r in got} == {today()}  # the day it was captured, never a past day
    meta = metadata(result, name)
    assert meta["capture_day"] == key(today()) and "captured_at" in meta


def test_snapshot_assets_offer_no_past_partition_and_keep_one_capture_per_day(handle: Any, db: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=["lists", "events"], schedule=False)
    by_name = {a.key.path[-1]: a for a in defs.assets}
    assert by_name["lists"].partitions_def is None and by_name["lists"].backfill_policy is None
    assert by_name["events"].partitions_def is not None
    assert materialize(handle, db, "lists").success
    wh = Warehouse(str(db))
    table = wh.qualified("lists")
    # An older capture (yesterday's) holding a list that has since been deleted in Klaviyo.
    wh.execute(
        f"INSERT INTO {table} BY NAME SELECT 'gone' AS id, 'Deleted list' AS name, "
        "?::TIMESTAMPTZ AS _partition", [today() - timedelta(days=1)]
    )
    assert materialize(handle, db, "lists").success  # a second capture today replaces today's only
    n_lists = len(handle.truth.records("list"))
    per_day = dict(wh.query(f"SELECT _partition, count(*) FROM {table} GROUP BY 1"))
    assert per_day == {today() - timedelta(days=1): 1, today(): n_lists}
    current = wh.query(f"SELECT id, _partition FROM {wh.qualified('lists_current')}")
    assert len(current) == n_lists and "gone" not in {r[0] for r in current}
    assert {r[1] for r in current} == {today()}


@pytest.mark.parametrize("name,kind,column", [
    ("list_memberships", "list", "list_id"),
    ("segment_memberships", "segment", "segment_id"),
])  # fmt: skip
def test_memberships_land_every_member_of_every_group(
    handle: Any, db: Path, name: str, kind: str, column: str
) -> None:
    result = materialize(handle, db, name)
    assert result.success, failure_text(result)
    expected = {
        (group["id"], pid, joined)
        for group in handle.truth.records(kind)
        for pid, joined in handle.truth.members(kind, group["id"])
    }
    wh = Warehouse(str(db))
    got = set(wh.query(f"SELECT {column}, profile_id, joined_group_at FROM {wh.qualified(name)}"))
    assert len(expected) > 0 and got == expected
    assert all(checks_passed(result).values())


def test_profile_additional_fields_are_switchable(handle: Any, db: Path) -> None:
    day = today() - timedelta(days=5)
    wh = Warehouse(str(db))
    sql = (
        f"SELECT count(*), count(subscriptions), count(predictive_analytics) FROM {wh.qualified('profiles')}"
    )
    assert materialize(handle, db, "profiles", partition=day).success
    n, subs, pa = wh.query(sql)[0]
    assert n > 0 and subs == n and pa == 0  # defaults: subscriptions on, predictive analytics off
    result = materialize(
        handle, db, "profiles", partition=day, profile_subscriptions=False, profile_predictive_analytics=True
    )
    assert result.success, failure_text(result)
    assert wh.query(sql)[0] == (n, 0, n)
    churn = wh.query(
        f"SELECT predictive_analytics->>'churn_probability' FROM {wh.qualified('profiles')} LIMIT 1"
    )
    assert churn[0][0] is not None


# -- today's partition ---------------------------------------------------------------------------------


def test_todays_partition_reads_back_a_change_made_in_klaviyo_today(handle: Any, db: Path) -> None:
    """A profile updated through the API today lands in today's (open) partition on the next run."""
    target = handle.truth.records("profile", "updated", first_day(handle), today() - timedelta(days=2))[0]
    headers = {
        "Authorization": f"Klaviyo-API-Key {handle.api_key}",
        "revision": "2026-07-15",
        "Content-Type": "application/vnd.api+json",
    }
    body = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {"email": target["attributes"]["email"], "title": "Head of Ingest"},
                        }
                    ]
                }
            },
        }
    }
    job = requests.post(f"{handle.base_url}/api/profile-bulk-import-jobs/", json=body, headers=headers, timeout=10)
    assert job.status_code == 202, job.text
    job_url = f"{handle.base_url}/api/profile-bulk-import-jobs/{job.json()['data']['id']}/"
    for _ in range(100):
        status = requests.get(job_url, headers=headers, timeout=10).json()["data"]["attributes"]["status"]
        if status == "complete":
            break
        time.sleep(0.05)
    assert status == "complete"

    result = materialize(handle, db, "profiles", partition=today())
    assert result.success, failure_text(result)
    wh = Warehouse(str(db))
    rows = wh.query(f"SELECT title, _partition FROM {wh.qualified('profiles')} WHERE id = ?", [target["id"]])
    assert rows == [("Head of Ingest", today())]
    md = metadata(result, "profiles")
    assert md["cursor_window"]["start"] == f"{key(today())}T00:00:00Z"
    # The open partition's window stops at now, never at tomorrow's midnight.
    assert datetime.fromisoformat(md["cursor_window"]["end"].replace("Z", "+00:00")) <= datetime.now(UTC)
