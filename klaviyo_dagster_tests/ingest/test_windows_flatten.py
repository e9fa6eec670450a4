"""Windows, filters and flattening on their own (pure functions: no API involved)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from klaviyo_dagster.ingest.flatten import Flattener
from klaviyo_dagster.ingest.objects import OBJECTS, get_object
from klaviyo_dagster.ingest.windows import Window, cursor_filter

UTC = timezone.utc
D = datetime(2026, 3, 10, tzinfo=UTC)


def test_every_entry_is_consistent() -> None:
    names = [o.name for o in OBJECTS]
    assert names == [
        "profiles", "events", "campaigns", "flows", "templates", "lists", "segments", "metrics",
        "list_memberships", "segment_memberships", "tags", "campaign_messages", "flow_actions", "flow_messages",
        "campaign_tags", "flow_tags", "list_tags", "segment_tags", "exclusions",
    ]  # fmt: skip
    for obj in OBJECTS:
        cols = obj.sql_columns()
        assert set(obj.primary_key) <= set(cols), obj.name
        assert cols["_partition"] == "TIMESTAMPTZ"
        if obj.incremental:
            assert cols[obj.cursor_column] == "TIMESTAMPTZ", obj.name
    with pytest.raises(ValueError, match="unknown Klaviyo object 'orders': choose from profiles, events"):
        get_object("orders")


def test_window_clamp_days_and_filters() -> None:
    w = Window(D, D + timedelta(days=3))
    assert w.days() == [D, D + timedelta(days=1), D + timedelta(days=2)]
    clamped = w.clamp(D + timedelta(days=1, hours=5))
    assert clamped.end == D + timedelta(days=1, hours=5) and not clamped.empty
    assert w.clamp(D - timedelta(days=1)).empty
    assert (
        cursor_filter("datetime", Window(D, D + timedelta(days=1)), "greater-or-equal", "less-than", 0)
        == "greater-or-equal(datetime,2026-03-10T00:00:00Z),less-than(datetime,2026-03-11T00:00:00Z)"
    )
    # profiles: no greater-or-equal -> widen by one second, drop early rows after reading
    assert (
        cursor_filter("updated", Window(D, D + timedelta(days=1)), "greater-than", "less-than", 1)
        == "greater-than(updated,2026-03-09T23:59:59Z),less-than(updated,2026-03-11T00:00:00Z)"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), D)


def profile(pid: str, updated: str | None, **attrs) -> dict:
    return {"type": "profile", "id": pid, "attributes": {"email": f"{pid}@x.io", "updated": updated, **attrs}}


def test_flatten_profiles_window_partition_and_json() -> None:
    obj = get_object("profiles")
    w = Window(D, D + timedelta(days=2))
    f = Flattener(obj, window=w, chunk_rows=3)
    page = [
        profile("a", "2026-03-09T23:59:59+00:00"),  # before start: dropped
        profile("b", "2026-03-10T00:00:00+00:00", properties={"n": 1, "tags": ["x"], "vip": True}),
        profile("c", "2026-03-11T00:00:00Z"),  # exactly midnight: next day
        profile("d", "2026-03-11T22:00:00-05:00"),  # 03:00 UTC on the 12th: outside the window
        profile("e", None),
        profile("g", "2026-03-11T23:59:59+00:00", location={"city": "Paris"}, phone_number=33123),
    ]
    chunks = list(f.chunks([(page, {})]))
    assert f.dropped == 3 and f.rows == 3
    (chunk,) = chunks
    assert chunk["id"] == ["b", "c", "g"]
    assert chunk["_partition"] == [
        "2026-03-10T00:00:00+00:00",
        "2026-03-11T00:00:00+00:00",
        "2026-03-11T00:00:00+00:00",
    ]
    assert orjson.loads(chunk["properties"][0]) == {"n": 1, "tags": ["x"], "vip": True}
    assert chunk["properties"][1] is None
    assert chunk["location"][2] == '{"city":"Paris"}'
    assert chunk["phone_number"][2] == "33123"  # VARCHAR columns get text whatever arrives


def test_flatten_chunks_relationships_pass_values_and_new_attributes() -> None:
    events = get_object("events")
    f = Flattener(events, window=Window(D, D + timedelta(days=1)), chunk_rows=2)
    recs = [
        {
            "type": "event",
            "id": f"e{i}",
            "attributes": {
                "datetime": f"2026-03-10T0{i}:00:00+00:00",
                "timestamp": 1,
                "event_properties": {"v": i},
            },
            "relationships": {
                "profile": {"data": {"type": "profile", "id": f"p{i}"}},
                "metric": {"data": None},
            },
        }
        for i in range(5)
    ]
    recs[3]["attributes"]["brand_new"] = {"k": [1, 2]}
    chunks = list(f.chunks([(recs[:3], {}), (recs[3:], {})]))
    assert [len(c["id"]) for c in chunks] == [3, 2]
    assert chunks[0]["profile_id"] == ["p0", "p1", "p2"] and chunks[0]["metric_id"] == [None] * 3
    assert chunks[1]["brand_new"] == ['{"k":[1,2]}', None]
    assert "brand_new" not in chunks[0]

    campaigns = get_object("campaigns")
    f = Flattener(campaigns, window=Window(D, D + timedelta(days=1)))
    rec = {
        "type": "campaign",
        "id": "c1",
        "attributes": {"updated_at": "2026-03-10T05:00:00+00:00", "id": "x"},
    }
    (chunk,) = list(f.chunks([([rec], {"channel": "sms"})]))
    assert chunk["channel"] == ["sms"]
    assert chunk["attr_id"] == ['"x"']  # an attribute clashing with a column gets a prefix

    members = get_object("list_memberships")
    f = Flattener(members, partition=D)
    rec = {"type": "profile", "id": "p9", "attributes": {"joined_group_at": "2026-01-01T00:00:00+00:00"}}
    (chunk,) = list(f.chunks([([rec], {"list_id": "L1"})]))
    assert chunk == {
        "list_id": ["L1"],
        "profile_id": ["p9"],
        "joined_group_at": ["2026-01-01T00:00:00+00:00"],
        "_partition": ["2026-03-10T00:00:00+00:00"],
    }
