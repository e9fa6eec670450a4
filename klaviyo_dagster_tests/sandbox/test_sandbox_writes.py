"""Sandbox writes over HTTP: bulk import jobs, identity merge, updated bump, import errors, caps, lists."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest
import requests

REVISION = "2026-07-15"


@pytest.fixture
def sb(klaviyo_sandbox_factory):
    # the lenient answers to the open questions (each switch's other values: test_semantics.py)
    return klaviyo_sandbox_factory(seed=7, scale="300:2000",
                                   semantics="import_invalid_row=job_error,identity_conflict=merge,"
                                             "import_error_payload=original")


@pytest.fixture
def http(sb):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                      "Content-Type": "application/vnd.api+json"})
    yield s
    s.close()


def post(http, sb, path, body):
    return http.post(sb.base_url + path, data=body if isinstance(body, bytes) else orjson.dumps(body), timeout=30)


def job_body(rows, list_ids=()):
    data = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": rows}}}
    if list_ids:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in list_ids]}}
    return {"data": data}


def row(**attrs):
    return {"type": "profile", "attributes": attrs}


def wait_complete(http, sb, job_id):
    seen = []
    for _ in range(100):
        attrs = http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job_id}/", timeout=10).json()["data"]["attributes"]
        if not seen or seen[-1] != attrs["status"]:
            seen.append(attrs["status"])
        if attrs["status"] == "complete":
            return attrs, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not complete: {seen}")


def all_ids(http, url):
    ids = []
    while url:
        doc = http.get(url, timeout=10).json()
        ids += [d["id"] for d in doc["data"]]
        url = doc["links"].get("next")
    return ids


def window_ids(http, sb, start, end):
    flt = (f"greater-than(updated,{(start - timedelta(seconds=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}),"
           f"less-than(updated,{end.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    r = http.get(f"{sb.base_url}/api/profiles/", params={"filter": flt, "sort": "updated", "page[size]": 100}, timeout=10)
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]] + all_ids(http, r.json()["links"].get("next"))


def test_bulk_import_lifecycle_identity_merge_and_errors(sb, http):
    existing = sb.truth.records("profile")[10]
    old_updated = datetime.fromisoformat(existing["attributes"]["updated"])
    old_window = window_ids(http, sb, old_updated, old_updated + timedelta(seconds=1))
    assert existing["id"] in old_window
    rows = [
        row(email=existing["attributes"]["email"], first_name="Renamed", properties={"tier": "gold"}, last_name=None),
        row(email="new.person@example.com", phone_number="+14155552671", external_id="ext-new-1"),
        row(email="not-an-email"),
        row(phone_number="555-0100"),
        row(first_name="No identifier"),
    ]
    r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body(rows))
    assert r.status_code == 202, r.text
    job = r.json()["data"]
    assert job["attributes"]["status"] == "queued" and job["attributes"]["total_count"] == 5
    attrs, statuses = wait_complete(http, sb, job["id"])
    assert statuses[-1] == "complete" and statuses[0] in ("queued", "processing")
    assert attrs["completed_count"] == 2 and attrs["failed_count"] == 3

    errs = http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job['id']}/import-errors/", timeout=10).json()["data"]
    assert len(errs) == 3
    by_pointer = {e["attributes"]["source"]["pointer"]: e["attributes"] for e in errs}
    email_err = by_pointer["/data/attributes/profiles/data/2/attributes/email"]
    assert "not-an-email" in email_err["detail"] and email_err["original_payload"] == rows[2]
    assert by_pointer["/data/attributes/profiles/data/3/attributes/phone_number"]["code"] == "invalid"
    assert "identifier" in by_pointer["/data/attributes/profiles/data/4"]["detail"]

    ids = [d["id"] for d in http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job['id']}/relationships/profiles/",
                                     timeout=10).json()["data"]]
    assert ids[0] == existing["id"] and len(ids) == 2
    merged = http.get(f"{sb.base_url}/api/profiles/{existing['id']}/", timeout=10).json()["data"]["attributes"]
    assert merged["first_name"] == "Renamed"
    assert merged["last_name"] == existing["attributes"]["last_name"]  # a null never clears
    assert merged["properties"]["tier"] == "gold" and merged["properties"]["plan"] == existing["attributes"]["properties"]["plan"]
    new_updated = datetime.fromisoformat(merged["updated"])
    assert new_updated > old_updated
    # the modified profile moved: gone from its old window, present in the window around now
    assert existing["id"] not in window_ids(http, sb, old_updated, old_updated + timedelta(seconds=1))
    now_window = window_ids(http, sb, new_updated - timedelta(minutes=1), new_updated + timedelta(minutes=1))
    assert set(now_window) == set(ids)
    # the new profile is found by each identifier, and a second import merges into it
    for flt in ('equals(email,"new.person@example.com")', "equals(phone_number,'+14155552671')",
                "equals(external_id,'ext-new-1')"):
        found = http.get(f"{sb.base_url}/api/profiles/", params={"filter": flt}, timeout=10).json()["data"]
        assert [p["id"] for p in found] == [ids[1]], flt
    r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body([row(phone_number="+14155552671", title="CEO")]))
    wait_complete(http, sb, r.json()["data"]["id"])
    again = http.get(f"{sb.base_url}/api/profiles/{ids[1]}/", timeout=10).json()["data"]["attributes"]
    assert again["title"] == "CEO" and again["email"] == "new.person@example.com"
    assert len(sb.truth.records("profile")) == 301
    # paging over everything still yields each profile exactly once
    everything = all_ids(http, f"{sb.base_url}/api/profiles/?sort=updated&page%5Bsize%5D=100")
    assert len(everything) == len(set(everything)) == 301


def test_bulk_import_caps(sb, http):
    r = post(http, sb, "/api/profile-bulk-import-jobs/",
             job_body([row(email=f"p{i}@example.com") for i in range(10_001)]))
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert "10000" in err["detail"] and err["source"]["pointer"] == "/data/attributes/profiles/data"
    big = [row(email=f"p{i}@example.com", properties={"blob": "x" * 600}) for i in range(9_000)]
    r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body(big))
    assert r.status_code == 413 and "5 MB" in r.json()["errors"][0]["detail"]
    huge = [row(email="huge@example.com", properties={"blob": "x" * 110_000}), row(email="fine@example.com")]
    job = post(http, sb, "/api/profile-bulk-import-jobs/", job_body(huge)).json()["data"]
    attrs, _ = wait_complete(http, sb, job["id"])
    assert attrs["failed_count"] == 1 and attrs["completed_count"] == 1
    r = post(http, sb, "/api/profile-bulk-import-jobs/", {"data": {"type": "profile", "attributes": {}}})
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/type"


def test_create_list_membership_and_cap(sb, http):
    r = post(http, sb, "/api/lists/", {"data": {"type": "list", "attributes": {"name": "Activation"}}})
    assert r.status_code == 201
    lst = r.json()["data"]
    again = post(http, sb, "/api/lists/", {"data": {"type": "list", "attributes": {"name": "Activation"}}}).json()["data"]
    assert again["id"] != lst["id"]  # names are not unique in Klaviyo
    names = [d["attributes"]["name"] for d in sb.truth.records("list")]
    assert names.count("Activation") == 2
    profiles = [p["id"] for p in sb.truth.records("profile")][:150]
    url = f"{sb.base_url}/api/lists/{lst['id']}/relationships/profiles/"
    body = {"data": [{"type": "profile", "id": pid} for pid in profiles]}
    r = http.post(url, data=orjson.dumps(body), timeout=10)
    assert r.status_code == 204 and r.content == b""
    assert all_ids(http, url + "?page%5Bsize%5D=100") == profiles
    members = sb.truth.members("list", lst["id"])
    assert [m[0] for m in members] == profiles
    r = http.delete(url, data=orjson.dumps({"data": body["data"][:50]}), timeout=10)
    assert r.status_code == 204
    assert all_ids(http, url + "?page%5Bsize%5D=100") == profiles[50:]
    count = http.get(f"{sb.base_url}/api/lists/{lst['id']}/", params={"additional-fields[list]": "profile_count"},
                     timeout=10).json()["data"]["attributes"]["profile_count"]
    assert count == 100
    too_many = {"data": [{"type": "profile", "id": profiles[0]}] * 1001}
    r = http.post(url, data=orjson.dumps(too_many), timeout=10)
    assert r.status_code == 400 and "1000" in r.json()["errors"][0]["detail"].replace(",", "")
    r = http.post(url, data=orjson.dumps({"data": [{"type": "profile", "id": "01NOPE"}]}), timeout=10)
    assert r.status_code == 400 and "do not exist" in r.json()["errors"][0]["detail"]
    r = http.post(f"{sb.base_url}/api/lists/nope00/relationships/profiles/", data=orjson.dumps(body), timeout=10)
    assert r.status_code == 404


def test_removing_a_base_member_and_adding_it_back(sb, http):
    lst = sb.truth.records("list")[0]
    members = sb.truth.members("list", lst["id"])
    pid, joined = members[0]
    url = f"{sb.base_url}/api/lists/{lst['id']}/relationships/profiles/"
    http.delete(url, data=orjson.dumps({"data": [{"type": "profile", "id": pid}]}), timeout=10)
    assert pid not in all_ids(http, url + "?page%5Bsize%5D=100")
    http.post(url, data=orjson.dumps({"data": [{"type": "profile", "id": pid}]}), timeout=10)
    after = sb.truth.members("list", lst["id"])
    assert after[-1][0] == pid and after[-1][1] > joined  # re-joined now
    assert all_ids(http, url + "?page%5Bsize%5D=100") == [m[0] for m in after]


def test_import_into_list_via_relationship(sb, http):
    lst = post(http, sb, "/api/lists/", {"data": {"type": "list", "attributes": {"name": "From import"}}}).json()["data"]
    job = post(http, sb, "/api/profile-bulk-import-jobs/",
               job_body([row(email=f"imp{i}@example.com") for i in range(30)], [lst["id"]])).json()["data"]
    wait_complete(http, sb, job["id"])
    imported = all_ids(http, f"{sb.base_url}/api/profile-bulk-import-jobs/{job['id']}/relationships/profiles/?page%5Bsize%5D=100")
    assert len(imported) == 30
    members = all_ids(http, f"{sb.base_url}/api/lists/{lst['id']}/profiles/?page%5Bsize%5D=100")
    assert members == imported
    lists = http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job['id']}/lists/", timeout=10).json()["data"]
    assert [x["id"] for x in lists] == [lst["id"]]
    r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body([row(email="x@example.com")], ["nope00"]))
    assert r.status_code == 404


def test_late_events_appear_in_past_windows(sb, http):
    first, last = sb.truth.date_range()
    start = last - timedelta(days=3)
    before = sb.truth.records("event", "datetime", start, last + timedelta(minutes=1))
    pending = sb.late_events_pending()
    assert pending > 0
    stats = requests.get(f"{sb.base_url}/__sandbox/stats", timeout=10).json()
    assert stats["late_events"]["pending"] == pending
    r = requests.post(f"{sb.base_url}/__sandbox/late-events", json={"count": 1}, timeout=10)
    assert r.json() == {"released": 1, "pending": pending - 1}
    assert sb.release_late_events() == pending - 1
    after = sb.truth.records("event", "datetime", start, last + timedelta(minutes=1))
    new = {e["id"] for e in after} - {e["id"] for e in before}
    assert len(new) == pending
    assert all(datetime.fromisoformat(e["attributes"]["datetime"]) < datetime.now(timezone.utc) - timedelta(minutes=1)
               for e in after if e["id"] in new)
    flt = f"greater-or-equal(datetime,{start.strftime('%Y-%m-%dT%H:%M:%SZ')})"
    served = all_ids(http, f"{sb.base_url}/api/events/?filter={flt}&page%5Bsize%5D=1000")
    assert new <= set(served) and len(served) == len(after)
    one = sorted(new)[0]
    assert http.get(f"{sb.base_url}/api/events/{one}/", timeout=10).status_code == 200


def test_admin_stats_count_requests_per_operation(sb, http):
    requests.delete(f"{sb.base_url}/__sandbox/stats", timeout=10)
    http.get(f"{sb.base_url}/api/metrics/", timeout=10)
    http.get(f"{sb.base_url}/api/metrics", timeout=10)
    http.get(f"{sb.base_url}/api/lists/", timeout=10)
    counts = requests.get(f"{sb.base_url}/__sandbox/stats", timeout=10).json()["requests"]
    assert counts == {"GET /api/metrics": 2, "GET /api/lists": 1}
    assert sb.stats() == counts


def test_concurrent_reads_during_imports_stay_consistent(sb):
    """Readers paging profiles by id while imports run: every page answers, no id twice, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    headers = {"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION}
    base_ids = {p["id"] for p in sb.truth.records("profile")}

    def read_all(_):
        s = requests.Session()
        s.headers.update(headers)
        return all_ids(s, f"{sb.base_url}/api/profiles/?page%5Bsize%5D=7")

    def write(k):
        s = requests.Session()
        s.headers.update({**headers, "Content-Type": "application/vnd.api+json"})
        rows = [row(email=f"conc{k}-{i}@example.com") for i in range(20)]
        return post(s, sb, "/api/profile-bulk-import-jobs/", job_body(rows)).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        reads = [pool.submit(read_all, n) for n in range(4)]
        writes = [pool.submit(write, k) for k in range(4)]
        results = [f.result() for f in reads]
        assert [f.result() for f in writes] == [202] * 4
    for ids in results:
        assert len(ids) == len(set(ids)) and base_ids <= set(ids)
    for _ in range(200):  # the jobs complete within a second or so
        if len(sb.truth.records("profile")) == 300 + 80:
            break
        time.sleep(0.05)
    assert len(sb.truth.records("profile")) == 300 + 80
