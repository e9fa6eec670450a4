"""Sandbox writes beyond profiles and lists, over HTTP: event creation, consent jobs, data-privacy deletion."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import requests

REVISION = "2026-07-15"


@pytest.fixture
def sb(klaviyo_sandbox_factory):
    return klaviyo_sandbox_factory(seed=11, scale="300:2000", page_cache_mb=4)  # cached pages must not go stale


@pytest.fixture
def http(sb):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                      "Content-Type": "application/vnd.api+json"})
    yield s
    s.close()


def post(http, sb, path, body):
    return http.post(sb.base_url + path, data=orjson.dumps(body), timeout=30)


def get(http, sb, path, params=None):
    r = http.get(sb.base_url + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def event(unique_id: str | None, metric: str = "Trial Ending", time_: str = "2026-11-01T10:00:00+00:00",
          **props: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"properties": props, "time": time_, "metric": {"data": {"type": "metric",
                                                                                      "attributes": {"name": metric}}}}
    if unique_id is not None:
        attrs["unique_id"] = unique_id
    return {"type": "event", "attributes": attrs}


def bulk(*entries: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {"profile": {"data": {"type": "profile", "attributes": p}},
                                                     "events": {"data": evs}}} for p, evs in entries]}}}}


def events_of(http, sb, metric_name):
    metrics = [m for m in get(http, sb, "/api/metrics")["data"] if m["attributes"]["name"] == metric_name]
    if not metrics:
        return []
    return get(http, sb, "/api/events", {"filter": f'equals(metric_id,"{metrics[0]["id"]}")'})["data"]


def test_bulk_events_appear_once_per_unique_id(http, sb):
    body = bulk(({"email": "ev.one@example.com"}, [event("a", plan="pro"), event("b", plan="free")]))
    r = post(http, sb, "/api/event-bulk-create-jobs", body)
    assert (r.status_code, r.content) == (202, b"")
    assert events_of(http, sb, "Trial Ending") == []  # asynchronous: nothing yet
    assert post(http, sb, "/api/event-bulk-create-jobs", body).status_code == 202  # a repeat of the same job
    got = until(lambda: len(events_of(http, sb, "Trial Ending")) >= 2 and events_of(http, sb, "Trial Ending"))
    time.sleep(0.6)  # the repeat has been processed too
    got = events_of(http, sb, "Trial Ending")
    assert sorted(e["attributes"]["event_properties"]["$event_id"] for e in got) == ["a", "b"]
    assert {e["attributes"]["datetime"] for e in got} == {"2026-11-01T10:00:00+00:00"}
    pid = got[0]["relationships"]["profile"]["data"]["id"]
    profile = get(http, sb, f"/api/profiles/{pid}")["data"]
    assert profile["attributes"]["email"] == "ev.one@example.com"  # created by the event
    assert sb.truth.records("event", "datetime")  # ground truth sees them too
    single = {"data": {**event("c", plan="x"), "attributes": {**event("c", plan="x")["attributes"], "profile": {
        "data": {"type": "profile", "id": pid, "attributes": {}}}}}}
    assert post(http, sb, "/api/events", single).status_code == 202
    assert until(lambda: len(events_of(http, sb, "Trial Ending")) == 3)


@pytest.mark.parametrize("body, pointer", [
    (bulk(({"email": "x@example.com"}, [event("same"), event("same")])), "/data/attributes/events-bulk-create/data"),
    (bulk(({"email": "not an email"}, [event("a")])),
     "/data/attributes/events-bulk-create/data/0/attributes/profile/data/attributes/email"),
    (bulk(({}, [event("a")])), "/data/attributes/events-bulk-create/data/0/attributes/profile/data/attributes"),
    (bulk(({"email": "x@example.com"}, [event("a", time_="1980-01-01T00:00:00Z")])),
     "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/time"),
    (bulk(({"email": "x@example.com"}, [event(str(k)) for k in range(1001)])),
     "/data/attributes/events-bulk-create/data"),
    (bulk(({"email": "x@example.com"}, [event("a", metric="m" * 128)])),
     "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/metric/data/attributes/name"),
])
def test_bad_event_requests_fail_whole(http, sb, body, pointer):
    r = post(http, sb, "/api/event-bulk-create-jobs", body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["source"]["pointer"] == pointer
    time.sleep(0.4)
    assert sb.truth.records("metric")[-1]["attributes"]["name"] != "Trial Ending"  # nothing was processed


def consent_job(kind: str, profiles: list[dict[str, Any]], list_id: str | None = None, **attrs: Any) -> dict:
    data: dict[str, Any] = {"type": kind, "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": p} for p in profiles]}, **attrs}}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def subscriptions_of(http, sb, email):
    data = get(http, sb, "/api/profiles", {"filter": f'equals(email,"{email}")',
                                          "additional-fields[profile]": "subscriptions"})["data"]
    return data[0]["attributes"]["subscriptions"] if data else None


def lists_by_opt_in(http, sb, process):
    return [g["id"] for g in sb.truth.records("list") if g["attributes"].get("opt_in_process") == process]


@pytest.mark.parametrize("scope", ["list_only", "global"])
def test_subscribe_and_unsubscribe_change_consent_and_membership(http, sb, scope):
    sb.set_semantics(unsubscribe_with_list=scope)
    single = lists_by_opt_in(http, sb, "single_opt_in")[0]
    email = "consent.one@example.com"
    sub = {"email": email, "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}
    r = post(http, sb, "/api/profile-subscription-bulk-create-jobs",
             consent_job("profile-subscription-bulk-create-job", [sub], single))
    assert (r.status_code, r.content) == (202, b"")
    marketing = until(lambda: (s := subscriptions_of(http, sb, email)) and s["email"]["marketing"])
    assert marketing["consent"] == "SUBSCRIBED" and marketing["can_receive_email_marketing"] is True
    pid = get(http, sb, "/api/profiles", {"filter": f'equals(email,"{email}")'})["data"][0]["id"]
    assert pid in {p for p, _ in sb.truth.members("list", single)}
    unsub = {"email": email, "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}
    r = post(http, sb, "/api/profile-subscription-bulk-delete-jobs",
             consent_job("profile-subscription-bulk-delete-job", [unsub], single))
    assert r.status_code == 202, r.text
    assert until(lambda: pid not in {p for p, _ in sb.truth.members("list", single)})
    marketing = subscriptions_of(http, sb, email)["email"]["marketing"]
    if scope == "global":
        assert marketing["consent"] == "UNSUBSCRIBED" and marketing["can_receive_email_marketing"] is False
        assert [s["reason"] for s in marketing["suppression"]] == ["UNSUBSCRIBE"]
    else:  # a list member is suppressed for that list only and keeps its consent
        assert marketing["consent"] == "SUBSCRIBED"
        assert [(s["list_id"], s["reason"]) for s in marketing["list_suppressions"]] == [(single, "USER_SUPPRESSED")]
    outsider = {"email": "not.a.member@example.com", "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}
    post(http, sb, "/api/profile-subscription-bulk-delete-jobs",
         consent_job("profile-subscription-bulk-delete-job", [outsider], single))
    assert until(lambda: (s := subscriptions_of(http, sb, "not.a.member@example.com"))
                 and s["email"]["marketing"]["consent"] == "UNSUBSCRIBED")  # non-members: globally, as the spec warns


def test_double_opt_in_list_changes_nothing_until_confirmed(http, sb):
    double = lists_by_opt_in(http, sb, "double_opt_in")[0]
    email = "consent.two@example.com"
    sub = {"email": email, "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}
    post(http, sb, "/api/profile-subscription-bulk-create-jobs",
         consent_job("profile-subscription-bulk-create-job", [sub], double))
    time.sleep(0.5)
    assert subscriptions_of(http, sb, email)["email"]["marketing"]["consent"] != "SUBSCRIBED"
    hist = {"email": email, "subscriptions": {"email": {"marketing": {
        "consent": "SUBSCRIBED", "consented_at": "2025-01-01T00:00:00+00:00"}}}}
    post(http, sb, "/api/profile-subscription-bulk-create-jobs",
         consent_job("profile-subscription-bulk-create-job", [hist], double, historical_import=True))
    assert until(lambda: subscriptions_of(http, sb, email)["email"]["marketing"]["consent"] == "SUBSCRIBED")
    assert subscriptions_of(http, sb, email)["email"]["marketing"]["consent_timestamp"] == "2025-01-01T00:00:00+00:00"


def test_consent_limits(http, sb):
    unsub = [{"email": f"u{k}@example.com", "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}
             for k in range(101)]
    r = post(http, sb, "/api/profile-subscription-bulk-delete-jobs",
             consent_job("profile-subscription-bulk-delete-job", unsub))
    assert r.status_code == 400 and "at most 100" in r.json()["errors"][0]["detail"]
    sms = [{"email": "a@example.com", "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}}}]
    r = post(http, sb, "/api/profile-subscription-bulk-create-jobs", consent_job("profile-subscription-bulk-create-job", sms))
    assert r.status_code == 400 and "phone_number" in r.json()["errors"][0]["detail"]
    hist = [{"email": "a@example.com", "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}]
    r = post(http, sb, "/api/profile-subscription-bulk-create-jobs",
             consent_job("profile-subscription-bulk-create-job", hist, historical_import=True))
    assert r.status_code == 400 and "consented_at" in r.json()["errors"][0]["detail"]


def test_suppression_jobs_report_and_apply(http, sb):
    email = "supp.one@example.com"
    r = post(http, sb, "/api/profile-suppression-bulk-create-jobs",
             consent_job("profile-suppression-bulk-create-job", [{"email": email}]))
    assert r.status_code == 202, r.text
    job = r.json()["data"]
    assert job["attributes"]["status"] == "queued"
    path = f"/api/profile-suppression-bulk-create-jobs/{job['id']}"
    done = until(lambda: (a := get(http, sb, path)["data"]["attributes"])["status"] == "complete" and a)
    assert (done["total_count"], done["completed_count"], done["skipped_count"]) == (1, 1, 0)
    marketing = subscriptions_of(http, sb, email)["email"]["marketing"]
    assert [s["reason"] for s in marketing["suppression"]] == ["USER_SUPPRESSED"]
    assert marketing["can_receive_email_marketing"] is False
    r = post(http, sb, "/api/profile-suppression-bulk-delete-jobs",
             consent_job("profile-suppression-bulk-delete-job", [{"email": email}, {"email": "nobody@example.com"}]))
    job = r.json()["data"]
    path = f"/api/profile-suppression-bulk-delete-jobs/{job['id']}"
    done = until(lambda: (a := get(http, sb, path)["data"]["attributes"])["status"] == "complete" and a)
    assert (done["completed_count"], done["skipped_count"]) == (1, 1)
    assert subscriptions_of(http, sb, email)["email"]["marketing"]["suppression"] == []
    assert subscriptions_of(http, sb, "nobody@example.com") is None  # unsuppress creates nobody
    listed = get(http, sb, "/api/profile-suppression-bulk-delete-jobs", {"filter": "equals(status,\"complete\")"})
    assert [j["id"] for j in listed["data"]] == [job["id"]]


def test_privacy_deletion_removes_profile_memberships_and_events(http, sb):
    base = sb.truth.records("profile")[5]
    pid, email = base["id"], base["attributes"]["email"]
    lists = [g["id"] for g in sb.truth.records("list") if pid in {p for p, _ in sb.truth.members("list", g["id"])}]
    events_before = [e for e in sb.truth.records("event") if e["relationships"]["profile"]["data"]["id"] == pid]
    assert email and events_before
    two = {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": {
        "type": "profile", "id": pid, "attributes": {"email": email}}}}}}
    r = post(http, sb, "/api/data-privacy-deletion-jobs", two)
    assert r.status_code == 400 and "exactly one identifier" in r.json()["errors"][0]["detail"]
    one = {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": {
        "type": "profile", "attributes": {"email": email}}}}}}
    r = post(http, sb, "/api/data-privacy-deletion-jobs", one)
    assert (r.status_code, r.content) == (202, b"")
    assert until(lambda: http.get(f"{sb.base_url}/api/profiles/{pid}", timeout=30).status_code == 404)
    assert get(http, sb, "/api/profiles", {"filter": f'equals(email,"{email}")'})["data"] == []
    assert pid not in {p["id"] for p in sb.truth.records("profile")}
    assert not [e for e in sb.truth.records("event") if e["relationships"]["profile"]["data"]["id"] == pid]
    for gid in lists:
        assert pid not in {p for p, _ in sb.truth.members("list", gid)}
    assert http.get(f"{sb.base_url}/api/events/{events_before[0]['id']}", timeout=30).status_code == 404
    assert post(http, sb, "/api/data-privacy-deletion-jobs", one).status_code == 202  # repeat: harmless
