"""The sandbox's data: deterministic from the seed and `now`, realistic in shape, consistent across types."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import phonenumbers
import requests

NOW = datetime(2026, 3, 10, 12, 30, 45, tzinfo=timezone.utc).timestamp()


def first_page(sb, path, params=None):
    r = requests.get(sb.base_url + path, params=params, timeout=10,
                     headers={"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"})
    assert r.status_code == 200, r.text
    return r.json()


def test_same_seed_and_now_same_data_other_seed_other_data(klaviyo_sandbox_factory):
    a = klaviyo_sandbox_factory(seed=5, scale="200:1000", now=NOW)
    b = klaviyo_sandbox_factory(seed=5, scale="200:1000", now=NOW)
    c = klaviyo_sandbox_factory(seed=6, scale="200:1000", now=NOW)
    assert a.api_key == b.api_key and a.api_key.startswith("pk_") and a.api_key != c.api_key
    for path in ("/api/profiles/", "/api/events/", "/api/lists/", "/api/metrics/"):
        da, db, dc = first_page(a, path), first_page(b, path), first_page(c, path)
        assert [d["attributes"] for d in da["data"]] == [d["attributes"] for d in db["data"]]
        assert [d["id"] for d in da["data"]] == [d["id"] for d in db["data"]]
        if path != "/api/metrics/":
            assert [d["id"] for d in da["data"]] != [d["id"] for d in dc["data"]]
    first, last = a.truth.date_range()
    assert last == datetime(2026, 3, 10, 12, 29, tzinfo=timezone.utc)
    assert last - first >= timedelta(days=30)


def test_shapes_and_cross_references(klaviyo_sandbox):
    sb = klaviyo_sandbox
    profiles = sb.truth.records("profile")
    profile_ids = {p["id"] for p in profiles}
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", p) for p in profile_ids)
    with_phone = [p["attributes"]["phone_number"] for p in profiles if p["attributes"]["phone_number"]]
    assert len(with_phone) > len(profiles) // 2
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in with_phone[:300])
    assert sum(1 for p in profiles if p["attributes"]["external_id"]) > len(profiles) // 3
    kinds = {type(v).__name__ for p in profiles for v in p["attributes"]["properties"].values()}
    assert {"str", "int", "float", "bool", "list", "dict", "NoneType"} <= kinds
    sizes = {type(p["attributes"]["properties"].get("favorite_size")).__name__ for p in profiles}
    assert {"str", "int"} <= sizes  # a property whose type changes between profiles
    assert all(p["attributes"]["location"]["city"] for p in profiles)

    metrics = sb.truth.records("metric")
    names = {m["attributes"]["name"] for m in metrics}
    assert len(metrics) >= 8 and {"Placed Order", "Received Email", "Opened Email", "Clicked Email",
                                  "Viewed Product", "Active on Site", "Sent SMS", "Started Checkout"} <= names
    assert all(re.fullmatch(r"[0-9A-Za-z]{6}", m["id"]) for m in metrics)
    _, last = sb.truth.date_range()
    events = sb.truth.records("event", "datetime", last - timedelta(days=4), last + timedelta(seconds=1))
    metric_ids = {m["id"] for m in metrics}
    assert all(e["relationships"]["profile"]["data"]["id"] in profile_ids for e in events)
    assert all(e["relationships"]["metric"]["data"]["id"] in metric_ids for e in events)
    assert {e["relationships"]["metric"]["data"]["id"] for e in events} == metric_ids
    assert all(e["attributes"]["timestamp"] == int(datetime.fromisoformat(e["attributes"]["datetime"]).timestamp())
               for e in events)

    campaigns = sb.truth.records("campaign")
    assert {c["channel"] for c in campaigns} == {"email", "sms", "mobile_push"}
    assert any(c["attributes"]["archived"] for c in campaigns)
    flows = sb.truth.records("flow")
    assert {f["attributes"]["status"] for f in flows} == {"draft", "manual", "live"}
    assert len({f["attributes"]["trigger_type"] for f in flows}) >= 4
    assert any(f["attributes"]["archived"] for f in flows)
    templates = sb.truth.records("template")
    assert all(t["attributes"]["html"].startswith("<html") and t["attributes"]["text"] for t in templates)
    lists = sb.truth.records("list")
    members = sb.truth.members("list", lists[0]["id"])
    assert members and {pid for pid, _ in members} <= profile_ids
    assert all(joined.tzinfo is not None for _, joined in members)


def test_late_events_can_be_released_automatically(klaviyo_sandbox_factory):
    sb = klaviyo_sandbox_factory(seed=9, scale="100:3000", late_release_after=0.2)
    assert sb.late_events_pending() > 0
    for _ in range(100):
        first_page(sb, "/api/metrics/")  # releases happen on the request path
        if sb.late_events_pending() == 0:
            break
        time.sleep(0.05)
    assert sb.late_events_pending() == 0
