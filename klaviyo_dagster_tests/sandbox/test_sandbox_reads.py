"""Sandbox read path over HTTP: auth, revision, paging, cursor windows, validation, truth agreement."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

REVISION = "2026-07-15"


@pytest.fixture(scope="module")
def http(klaviyo_sandbox):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {klaviyo_sandbox.api_key}", "revision": REVISION})
    yield s
    s.close()


def get(http, sb, path, params=None):
    return http.get(sb.base_url + path, params=params, timeout=30)


def all_pages(http, sb, path, params=None):
    """Follow links.next; return (ids, number of pages, documents)."""
    ids, docs = [], []
    url, first = sb.base_url + path, True
    while url:
        r = http.get(url, params=params if first else None, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        docs.append(doc)
        ids += [d["id"] for d in doc["data"]]
        url, first = doc["links"].get("next"), False
    return ids, docs


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def errors_of(r):
    body = r.json()
    assert set(body) == {"errors"}
    err = body["errors"][0]
    assert {"id", "status", "code", "title", "detail", "source"} <= set(err)
    assert err["status"] == r.status_code
    return err


def test_missing_and_wrong_key_are_401(klaviyo_sandbox):
    url = klaviyo_sandbox.base_url + "/api/profiles/"
    r = requests.get(url, headers={"revision": REVISION}, timeout=10)
    assert r.status_code == 401 and errors_of(r)["code"] == "not_authenticated"
    r = requests.get(url, headers={"revision": REVISION, "Authorization": "Klaviyo-API-Key pk_wrong"}, timeout=10)
    assert r.status_code == 401 and errors_of(r)["code"] == "authentication_failed"
    assert klaviyo_sandbox.api_key not in r.text


@pytest.mark.parametrize("revision", [None, "2026-7-15", "latest", "2026-07-15-pre"])
def test_missing_or_malformed_revision_is_400(klaviyo_sandbox, revision):
    headers = {"Authorization": f"Klaviyo-API-Key {klaviyo_sandbox.api_key}"}
    if revision is not None:
        headers["revision"] = revision
    r = requests.get(klaviyo_sandbox.base_url + "/api/profiles/", headers=headers, timeout=10)
    assert r.status_code == 400
    assert errors_of(r)["source"] == {"parameter": "revision"}


def test_an_earlier_served_revision_is_served(http, klaviyo_sandbox):
    r = http.get(klaviyo_sandbox.base_url + "/api/metrics/", headers={"revision": "2026-01-15"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.api+json"


def test_paths_with_and_without_trailing_slash(http, klaviyo_sandbox):
    a = get(http, klaviyo_sandbox, "/api/lists/").json()
    b = get(http, klaviyo_sandbox, "/api/lists").json()
    assert [d["id"] for d in a["data"]] == [d["id"] for d in b["data"]]
    r = get(http, klaviyo_sandbox, "/api/nope/")
    assert r.status_code == 404 and errors_of(r)["code"] == "not_found"


def test_profiles_paging_is_complete_and_matches_truth(http, klaviyo_sandbox):
    ids, docs = all_pages(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 100})
    truth = [p["id"] for p in klaviyo_sandbox.truth.records("profile")]
    assert len(ids) == len(set(ids)) == len(truth) == 2000
    assert ids == sorted(truth)  # default order: id
    assert len(docs) == 20
    nxt = docs[0]["links"]["next"]
    assert nxt.startswith(klaviyo_sandbox.base_url + "/api/profiles/?") and "page%5Bsize%5D=100" in nxt
    assert "page%5Bcursor%5D=" in nxt
    assert "prev" not in docs[0]["links"] and "prev" in docs[1]["links"]
    back = http.get(docs[1]["links"]["prev"], timeout=10).json()
    assert [d["id"] for d in back["data"]] == [d["id"] for d in docs[0]["data"]]


def test_page_size_bounds(http, klaviyo_sandbox):
    for path, bad in (("/api/profiles/", 101), ("/api/events/", 1001), ("/api/lists/", 11), ("/api/profiles/", 0)):
        r = get(http, klaviyo_sandbox, path, {"page[size]": bad})
        assert r.status_code == 400, (path, bad)
        assert errors_of(r)["source"] == {"parameter": "page[size]"}
    assert len(get(http, klaviyo_sandbox, "/api/events/", {"page[size]": 1000}).json()["data"]) == 1000
    r = get(http, klaviyo_sandbox, "/api/metrics/", {"page[size]": 5})
    assert r.status_code == 400 and "not a valid query parameter" in errors_of(r)["detail"]


def test_undeclared_parameter_is_400(http, klaviyo_sandbox):
    r = get(http, klaviyo_sandbox, "/api/profiles/", {"limit": 5})
    assert r.status_code == 400 and errors_of(r)["source"] == {"parameter": "limit"}


@pytest.mark.parametrize("flt,needle", [
    ("greater-or-equal(updated,2026-01-01T00:00:00Z)", "not allowed on 'updated'"),
    ("equals(city,'Boston')", "not supported"),
    ("equals(email,foo@example.com)", "must be quoted"),
    ("greater-than(updated,yesterday)", "needs an ISO 8601 datetime"),
    ("equals(email,'a'", "ends early"),
])
def test_bad_profile_filters_are_400(http, klaviyo_sandbox, flt, needle):
    r = get(http, klaviyo_sandbox, "/api/profiles/", {"filter": flt})
    assert r.status_code == 400
    err = errors_of(r)
    assert err["source"] == {"parameter": "filter"} and needle in err["detail"]


def test_profile_updated_window_matches_truth(http, klaviyo_sandbox):
    first, last = klaviyo_sandbox.truth.date_range()
    start = (last - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    flt = f"greater-than(updated,{iso(start - timedelta(seconds=1))}),less-than(updated,{iso(end)})"
    ids, _ = all_pages(http, klaviyo_sandbox, "/api/profiles/", {"filter": flt, "page[size]": 100})
    truth = {p["id"] for p in klaviyo_sandbox.truth.records("profile", "updated", start, end)}
    assert set(ids) == truth and len(ids) == len(truth) > 0


def test_midnight_records_exist_and_fall_on_the_right_day(klaviyo_sandbox):
    first, last = klaviyo_sandbox.truth.date_range()
    profiles = klaviyo_sandbox.truth.records("profile")
    events = klaviyo_sandbox.truth.records("event", "datetime", last - timedelta(days=8), last)
    midnight_p = [p for p in profiles if p["attributes"]["updated"].endswith("T00:00:00+00:00")]
    midnight_e = [e for e in events if e["attributes"]["datetime"].endswith("T00:00:00+00:00")]
    assert len(midnight_p) >= 5 and len(midnight_e) >= 5


def test_event_window_sort_and_include(http, klaviyo_sandbox):
    first, last = klaviyo_sandbox.truth.date_range()
    day = (last - timedelta(days=5)).replace(hour=0, minute=0, second=0, microsecond=0)
    flt = f"greater-or-equal(datetime,{iso(day)}),less-than(datetime,{iso(day + timedelta(days=1))})"
    ids, docs = all_pages(http, klaviyo_sandbox, "/api/events/",
                          {"filter": flt, "sort": "-datetime", "include": "metric,profile"})
    truth = klaviyo_sandbox.truth.records("event", "datetime", day, day + timedelta(days=1))
    assert sorted(ids) == sorted(e["id"] for e in truth)
    assert docs[0]["data"][0]["attributes"]["datetime"] == max(e["attributes"]["datetime"] for e in truth)
    # the first event of the day sits exactly on midnight
    assert docs[-1]["data"][-1]["attributes"]["datetime"] == day.isoformat()
    included = {(i["type"], i["id"]) for d in docs for i in d["included"]}
    for d in docs[0]["data"]:
        assert ("metric", d["relationships"]["metric"]["data"]["id"]) in included
        assert ("profile", d["relationships"]["profile"]["data"]["id"]) in included


def test_events_by_metric(http, klaviyo_sandbox):
    metrics = get(http, klaviyo_sandbox, "/api/metrics/").json()["data"]
    assert len(metrics) >= 8
    order = next(m for m in metrics if m["attributes"]["name"] == "Placed Order")
    doc = get(http, klaviyo_sandbox, "/api/events/",
              {"filter": f"equals(metric_id,\"{order['id']}\")", "page[size]": 50}).json()
    assert len(doc["data"]) == 50
    for e in doc["data"]:
        assert e["relationships"]["metric"]["data"]["id"] == order["id"]
        props = e["attributes"]["event_properties"]
        assert props["value"] > 0 and props["Items"]


def test_single_resources_and_404(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    for rtype, path in (("profile", "profiles"), ("event", "events"), ("list", "lists"), ("segment", "segments"),
                        ("metric", "metrics"), ("campaign", "campaigns"), ("flow", "flows"),
                        ("template", "templates")):
        _, last = sb.truth.date_range()
        rec = (sb.truth.records(rtype, "datetime", last - timedelta(days=1), last) if rtype == "event"
               else sb.truth.records(rtype))[0]
        r = get(http, sb, f"/api/{path}/{rec['id']}/")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["id"] == rec["id"]
        assert r.json()["data"]["attributes"] == rec["attributes"]
        r = get(http, sb, f"/api/{path}/XXXXXX/")
        assert r.status_code == 404 and errors_of(r)["code"] == "not_found"


def test_campaigns_need_one_channel_and_hide_archived(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    assert get(http, sb, "/api/campaigns/").status_code == 400
    r = get(http, sb, "/api/campaigns/", {"filter": "equals(archived,false)"})
    assert r.status_code == 400 and "messages.channel" in errors_of(r)["detail"]
    truth = sb.truth.records("campaign")
    for channel in ("email", "sms", "mobile_push"):
        ids, _ = all_pages(http, sb, "/api/campaigns/", {"filter": f"equals(messages.channel,'{channel}')"})
        expected = {c["id"] for c in truth if c["channel"] == channel and not c["attributes"]["archived"]}
        assert set(ids) == expected and expected
        ids, _ = all_pages(http, sb, "/api/campaigns/",
                           {"filter": f"equals(messages.channel,'{channel}'),equals(archived,true)"})
        archived = {c["id"] for c in truth if c["channel"] == channel and c["attributes"]["archived"]}
        assert set(ids) == archived
    assert any(c["attributes"]["archived"] for c in truth)


def test_flows_hide_archived_unless_asked(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    truth = sb.truth.records("flow")
    ids, _ = all_pages(http, sb, "/api/flows/")
    assert set(ids) == {f["id"] for f in truth if not f["attributes"]["archived"]}
    ids, _ = all_pages(http, sb, "/api/flows/", {"filter": "equals(archived,true)"})
    assert set(ids) == {f["id"] for f in truth if f["attributes"]["archived"]} and ids
    assert {f["attributes"]["status"] for f in truth} == {"draft", "manual", "live"}
    doc = get(http, sb, "/api/flows/", {"include": "flow-actions"}).json()
    actions = {i["id"] for i in doc["included"] if i["type"] == "flow-action"}
    assert actions == {a["id"] for f in doc["data"] for a in f["relationships"]["flow-actions"]["data"]}


def test_list_members_paging_and_window(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    lst = sb.truth.records("list")[0]
    members = sb.truth.members("list", lst["id"])
    ids, docs = all_pages(http, sb, f"/api/lists/{lst['id']}/profiles/", {"page[size]": 100})
    assert ids == [pid for pid, _ in members] and len(ids) > 100
    assert docs[0]["data"][0]["attributes"]["joined_group_at"]
    rel_ids, _ = all_pages(http, sb, f"/api/lists/{lst['id']}/relationships/profiles/", {"page[size]": 100})
    assert rel_ids == ids
    cut = members[len(members) // 2][1]
    ids, _ = all_pages(http, sb, f"/api/lists/{lst['id']}/profiles/",
                       {"filter": f"greater-or-equal(joined_group_at,{cut.isoformat()})", "page[size]": 100})
    assert ids == [pid for pid, j in members if j >= cut]
    seg = sb.truth.records("segment")[0]
    ids, _ = all_pages(http, sb, f"/api/segments/{seg['id']}/relationships/profiles/", {"page[size]": 100})
    assert ids == [pid for pid, _ in sb.truth.members("segment", seg["id"])]


def test_sparse_fields_and_additional_fields(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    doc = get(http, sb, "/api/profiles/", {"fields[profile]": "email,location.city"}).json()
    for p in doc["data"]:
        assert set(p["attributes"]) <= {"email", "location"}
        assert set(p["attributes"].get("location", {})) <= {"city"}
    plain = get(http, sb, "/api/profiles/").json()["data"][0]["attributes"]
    assert "subscriptions" not in plain and "predictive_analytics" not in plain
    extra = get(http, sb, "/api/profiles/",
                {"additional-fields[profile]": "subscriptions,predictive_analytics"}).json()["data"][0]["attributes"]
    assert extra["subscriptions"]["email"]["marketing"]["consent"]
    assert "historic_clv" in extra["predictive_analytics"]
    r = get(http, sb, "/api/profiles/", {"additional-fields[profile]": "everything"})
    assert r.status_code == 400


def test_profile_point_lookups(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    target = sb.truth.records("profile")[123]
    email = target["attributes"]["email"]
    doc = get(http, sb, "/api/profiles/", {"filter": f'equals(email,"{email}")'}).json()
    assert [p["id"] for p in doc["data"]] == [target["id"]]
    phone = next(p for p in sb.truth.records("profile") if p["attributes"]["phone_number"])
    doc = get(http, sb, "/api/profiles/",
              {"filter": f"any(phone_number,['{phone['attributes']['phone_number']}','+10000000000'])"}).json()
    assert phone["id"] in [p["id"] for p in doc["data"]]


def test_date_range_ends_near_now(klaviyo_sandbox):
    first, last = klaviyo_sandbox.truth.date_range()
    now = datetime.now(timezone.utc)
    assert timedelta(0) < now - last < timedelta(minutes=10)
    assert last - first >= timedelta(days=30)


@pytest.mark.parametrize("path,params,parameter", [
    ("/api/profiles/", {"sort": "first_name"}, "sort"),
    ("/api/events/", {"include": "metric,weather"}, "include"),
    ("/api/profiles/", {"fields[profile]": "email,shoe_size"}, "fields[profile]"),
    ("/api/profiles/", {"fields[nonsense]": "id"}, "fields[nonsense]"),
    ("/api/profiles/", {"page[cursor]": "not-a-cursor"}, "page[cursor]"),
    ("/api/lists/", {"filter": "greater-than(updated,2026-01-01T00:00:00Z),equals(opt_in_process,'x')"}, "filter"),
    ("/api/flows/", {"filter": "or(equals(status,'live'),equals(status,'draft'))"}, "filter"),
    ("/api/events/", {"filter": "equals(profile_id,'X')", "page[size]": "ten"}, "page[size]"),
])
def test_every_declared_rule_rejects_what_it_does_not_declare(http, klaviyo_sandbox, path, params, parameter):
    r = get(http, klaviyo_sandbox, path, params)
    assert r.status_code == 400
    assert errors_of(r)["source"] == {"parameter": parameter}


def test_repeated_query_keys_last_wins(http, klaviyo_sandbox):
    url = klaviyo_sandbox.base_url + "/api/profiles/?page%5Bsize%5D=3&page%5Bsize%5D=5"
    doc = http.get(url, timeout=10).json()
    assert len(doc["data"]) == 5
    assert "page%5Bsize%5D=5" in doc["links"]["next"] and "page%5Bsize%5D=3" not in doc["links"]["next"]


def test_cursor_from_another_sort_is_refused(http, klaviyo_sandbox):
    doc = get(http, klaviyo_sandbox, "/api/profiles/", {"sort": "updated"}).json()
    cursor = doc["links"]["next"].split("page%5Bcursor%5D=")[1]
    r = http.get(klaviyo_sandbox.base_url + f"/api/profiles/?page%5Bcursor%5D={cursor}", timeout=10)
    assert r.status_code == 400 and errors_of(r)["source"] == {"parameter": "page[cursor]"}


def test_wrong_method_is_405(http, klaviyo_sandbox):
    r = http.delete(klaviyo_sandbox.base_url + "/api/profiles/", timeout=10)
    assert r.status_code == 405 and errors_of(r)["code"] == "method_not_allowed"


def test_sorting_and_descending_paging(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    ids, _ = all_pages(http, sb, "/api/profiles/", {"sort": "-updated", "page[size]": 100})
    truth = sorted(sb.truth.records("profile"), key=lambda p: (p["attributes"]["updated"], p["id"]), reverse=True)
    assert [p["id"] for p in truth] == ids
    names, _ = all_pages(http, sb, "/api/templates/", {"sort": "-name"})
    by_id = {t["id"]: t["attributes"]["name"] for t in sb.truth.records("template")}
    assert [by_id[i] for i in names] == sorted(by_id.values(), reverse=True)
    doc = get(http, sb, "/api/profiles/", {"sort": "email", "page[size]": 50}).json()
    emails = [p["attributes"]["email"] for p in doc["data"]]
    assert emails == sorted(emails)


def test_member_fields_keep_joined_group_at_and_include_is_answered(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    lst = sb.truth.records("list")[0]
    doc = get(http, sb, f"/api/lists/{lst['id']}/profiles/", {"fields[profile]": "email"}).json()
    assert set(doc["data"][0]["attributes"]) == {"email", "joined_group_at"}
    doc = get(http, sb, "/api/profiles/", {"include": "push-tokens"}).json()
    assert doc["included"] == []
    prof = sb.truth.members("list", lst["id"])[0][0]
    doc = get(http, sb, f"/api/profiles/{prof}/", {"include": "lists"}).json()
    assert lst["id"] in [x["id"] for x in doc["data"]["relationships"]["lists"]["data"]]
    assert lst["id"] in [x["id"] for x in doc["included"]]


def test_filter_grammar_and_offsets_and_has(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    _, last = sb.truth.date_range()
    day = (last - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    z = f"greater-or-equal(datetime,{iso(day)}),less-than(datetime,{iso(day + timedelta(hours=6))})"
    # the same window written with and(), a +02:00 offset and a has() condition
    off = (day + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    off_end = (day + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    alt = f"and(greater-or-equal(datetime,{off}),less-than(datetime,{off_end})),has(profile)"
    a, _ = all_pages(http, sb, "/api/events/", {"filter": z, "page[size]": 1000})
    b, _ = all_pages(http, sb, "/api/events/", {"filter": alt, "page[size]": 1000})
    assert a == b and a
    ts = int(day.timestamp())
    c, _ = all_pages(http, sb, "/api/events/", {"filter": f"greater-or-equal(timestamp,{ts}),"
                                                          f"less-than(datetime,{iso(day + timedelta(hours=6))})"})
    assert c == a and ts > 0
    flows = sb.truth.records("flow")
    live = [f["id"] for f in flows if f["attributes"]["status"] == "live" and not f["attributes"]["archived"]]
    ids, _ = all_pages(http, sb, "/api/flows/", {"filter": "equals(status,\"live\")"})
    assert sorted(ids) == sorted(live)
    names = [t["attributes"]["name"] for t in sb.truth.records("template")][:2]
    quoted = ",".join(f'"{n}"' for n in names)
    ids, _ = all_pages(http, sb, "/api/templates/", {"filter": f"any(name,[{quoted}])"})
    assert len(ids) == 2


def test_profile_filters_on_subscription_fields(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    doc = get(http, sb, "/api/profiles/", {
        "filter": "equals(subscriptions.email.marketing.suppression.reason,'UNSUBSCRIBE')",
        "additional-fields[profile]": "subscriptions", "page[size]": 100}).json()
    assert doc["data"]
    for p in doc["data"]:
        reasons = [s["reason"] for s in p["attributes"]["subscriptions"]["email"]["marketing"]["suppression"]]
        assert "UNSUBSCRIBE" in reasons
    r = get(http, sb, "/api/profiles/", {"filter": "equals(_kx,'abc')"})
    assert r.status_code == 200 and r.json()["data"] == []


def test_rate_limit_headers_on_success_and_on_errors(http, klaviyo_sandbox):
    ok = get(http, klaviyo_sandbox, "/api/lists/")
    bad = get(http, klaviyo_sandbox, "/api/lists/", {"page[size]": 50})
    assert ok.status_code == 200 and bad.status_code == 400
    for r in (ok, bad):
        assert r.headers["RateLimit-Limit"].startswith("75") and "RateLimit-Remaining" in r.headers
