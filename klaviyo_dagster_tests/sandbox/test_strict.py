"""The sandbox is as strict as Klaviyo: paging as the official SDK does it, revisions, per-revision parameters.

Raw HTTP against the shared sandbox (no client code): each rule is one Klaviyo behaviour a lenient server
would hide (see the README's sandbox section).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from klaviyo_dagster.sandbox import revisions
from klaviyo_dagster.spec import load_subset
from klaviyo_dagster_tests.sandbox.sandbox_http import first_id_of

REVISION = "2026-07-15"


@pytest.fixture(scope="module")
def http(klaviyo_sandbox):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {klaviyo_sandbox.api_key}", "revision": REVISION})
    yield s
    s.close()


def get(http, sb, path, params=None, revision=None):
    headers = {"revision": revision} if revision else None
    return http.get(sb.base_url + path, params=params, headers=headers, timeout=30)


def error_of(r):
    err = r.json()["errors"][0]
    assert err["status"] == r.status_code
    return err


# --- paging -----------------------------------------------------------------------------------------------


def test_cursor_with_a_leading_equals_sign_is_served_like_the_sdk_sends_it(http, klaviyo_sandbox):
    first = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5}).json()
    nxt = first["links"]["next"]
    token = parse_qs(urlsplit(nxt).query)["page[cursor]"][0]
    plain = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5, "page[cursor]": token}).json()
    # klaviyo-api splits links.next on 'page%5Bcursor%5D' and keeps the '=': page[cursor]=%3D<token>
    sdk = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5, "page[cursor]": "=" + token})
    assert sdk.status_code == 200, sdk.text
    ids = [d["id"] for d in sdk.json()["data"]]
    assert ids == [d["id"] for d in plain["data"]] and len(ids) == 5
    assert not set(ids) & {d["id"] for d in first["data"]}
    # Its own links carry a clean cursor again.
    assert "%3D" not in sdk.json()["links"]["next"].split("page%5Bcursor%5D=")[1][:3]


def test_a_whole_links_next_url_as_cursor_is_read_like_the_sdk_reads_an_https_one(http, klaviyo_sandbox):
    first = get(http, klaviyo_sandbox, "/api/lists/", {"page[size]": 3}).json()
    nxt = first["links"]["next"]  # klaviyo-api cuts only https links; against http it sends the whole URL
    r = get(http, klaviyo_sandbox, "/api/lists/", {"page[size]": 3, "page[cursor]": nxt})
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["data"]] == [d["id"] for d in http.get(nxt, timeout=10).json()["data"]]


def test_a_cursor_the_server_did_not_issue_is_still_refused(http, klaviyo_sandbox):
    r = get(http, klaviyo_sandbox, "/api/profiles/", {"page[cursor]": "=not-a-cursor"})
    assert r.status_code == 400 and error_of(r)["source"] == {"parameter": "page[cursor]"}


# --- revisions --------------------------------------------------------------------------------------------


def test_the_revision_list_ends_at_the_spec_and_says_where_it_came_from():
    assert revisions.SPEC_REVISION == load_subset()["revision"] == REVISION
    assert list(revisions.PUBLISHED) == sorted(set(revisions.PUBLISHED))
    assert revisions.SERVED == ("2026-01-15", "2026-04-15", "2026-07-15")
    assert "klaviyo-api-python" in revisions.SOURCE
    ops = set(load_subset()["operations"])
    for change in revisions.CHANGES:  # every change names operations the sandbox serves
        assert change.revision in revisions.PUBLISHED and set(change.operations) <= ops, change


@pytest.mark.parametrize("revision,needle", [
    ("2026-10-15", "newer than the spec"),
    ("1999-01-01", "not a revision Klaviyo has published"),
    ("2026-05-01", "not a revision Klaviyo has published"),
    ("2023-07-15", "was retired on 2025-07-15"),
    ("2025-10-15", "older than 2026-01-15"),
    ("2026-07-15.pre", "pre-release"),
    ("2026-02-30", "not a calendar date"),
    ("latest", "not YYYY-MM-DD"),
])
def test_a_revision_the_sandbox_cannot_serve_faithfully_is_a_clear_400(http, klaviyo_sandbox, revision, needle):
    r = get(http, klaviyo_sandbox, "/api/campaigns/", {"filter": "equals(messages.channel,'email')"}, revision)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["source"] == {"parameter": "revision"}
    assert needle in err["detail"]
    assert "serves revisions 2026-01-15, 2026-04-15, 2026-07-15" in err["detail"]


@pytest.mark.parametrize("path,params,revision,ok", [
    ("/api/events/", {"page[size]": 5}, "2026-01-15", True),
    ("/api/lists/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/lists/", {"page[size]": 5}, "2026-04-15", True),
    ("/api/segments/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/templates/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/campaigns/", {"page[size]": 5, "filter": "equals(messages.channel,'email')"}, "2026-01-15", False),
    ("/api/campaigns/", {"page[size]": 5, "filter": "equals(messages.channel,'email')"}, "2026-04-15", True),
    ("/api/templates/", {"additional-fields[template]": "definition"}, "2026-01-15", False),
    ("/api/templates/", {"additional-fields[template]": "definition"}, "2026-04-15", True),
    ("/api/events/", {"filter": "has(metric)"}, "2026-04-15", False),
    ("/api/events/", {"filter": "has(metric)"}, "2026-07-15", True),
    ("/api/events/", {"filter": "has(profile)"}, "2026-01-15", True),
    ("/api/profiles/", {"include": "conversations"}, "2026-04-15", False),
])
def test_parameters_a_revision_lacks_are_refused_on_it(http, klaviyo_sandbox, path, params, revision, ok):
    r = get(http, klaviyo_sandbox, path, params, revision)
    if ok:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert f"not available on revision {revision}" in err["detail"]
    name = next(k for k in params if k != "filter" or "page[size]" not in params)
    assert err["source"]["parameter"] == name


# --- filters: exactly as x-klaviyo-filters says ---------------------------------------------------------


def test_filter_rules_are_derived_from_the_spec_extension_not_written_by_hand():
    ops = load_subset()["operations"]
    name = ops["GET /api/lists"]["parameters"]["filter"]["filters"]["name"]
    assert name == {"operators": {"list": ["any", "equals"]}, "value": {"type": "string"}}
    assert ops["GET /api/events"]["parameters"]["filter"]["filters"]["metric"]["operators"] == {"none": ["has"]}
    for op in ops.values():  # the union kept for older readers agrees with the forms
        f = op["parameters"].get("filter")
        if f:
            assert f["allowed"] == {k: sorted({o for ops_ in v["operators"].values() for o in ops_}, key=f["allowed"][k].index)
                                    for k, v in f["filters"].items()}


@pytest.mark.parametrize("path,flt,ok,needle", [
    ("/api/lists/", 'equals(name,["Newsletter"])', True, ""),
    ("/api/lists/", 'any(name,["Newsletter","Winback"])', True, ""),
    ("/api/lists/", 'equals(name,"Newsletter")', False, 'takes a list value such as ["a","b"] on this endpoint'),
    ("/api/segments/", "equals(name,'At Risk')", False, "write e.g. equals(name,[\"x\"])"),
    ("/api/profiles/", 'equals(email,"a@example.com")', True, ""),
    ("/api/profiles/", 'equals(email,["a@example.com","b@example.com"])', True, ""),
    ("/api/profiles/", 'any(email,"a@example.com")', False, "takes a list value"),
    ("/api/campaigns/", "any(id,'x'),equals(messages.channel,'email')", False, "takes a list value"),
    ("/api/campaigns/", "equals(messages.channel,'fax')", False, "is not one of email, sms, mobile_push"),
    ("/api/events/", "has(metric)", True, ""),
    ("/api/events/", "equals(metric,'x')", False, "not allowed on 'metric'; allowed (none: has)"),
    ("/api/events/", 'equals(metric_id,["a","b"])', True, ""),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00:00Z)", True, ""),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00:00.250Z)", True, ""),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00:00+02:00)", True, ""),
    ("/api/events/", "greater-than(datetime,2026-01-01 00:00:00Z)", True, ""),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00:00)", True, ""),
    ("/api/events/", "greater-than(datetime,'2026-01-01T00:00:00Z')", False, "datetimes are not quoted"),
    ("/api/events/", 'greater-than(datetime,"2026-01-01T00:00:00Z")', False, "datetimes are not quoted"),
    ("/api/events/", "greater-than(datetime,2026-01-01)", False, "needs an ISO 8601 datetime with a time"),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00Z)", False, "needs an ISO 8601 datetime with a time"),
    ("/api/events/", "greater-than(datetime,2026-01-01t00:00:00z)", False, "needs an ISO 8601 datetime with a time"),
    ("/api/events/", "greater-than(datetime,2026-01-01T00:00:00 02:00)", False, "as %2B"),
    ("/api/events/", "greater-than(timestamp,1767225600)", True, ""),
    ("/api/events/", "greater-than(timestamp,2026-01-01T00:00:00Z)", False, "needs an unquoted number"),
    ("/api/flows/", "equals(archived,'true')", False, "needs true or false"),
    ("/api/flows/", "equals(status,live)", False, "must be quoted"),
])
def test_filters_take_exactly_the_forms_the_spec_allows(http, klaviyo_sandbox, path, flt, ok, needle):
    params = {"filter": flt}
    if path == "/api/campaigns/" and "messages.channel" not in flt:
        params["filter"] += ",equals(messages.channel,'email')"
    r = get(http, klaviyo_sandbox, path, params)
    if ok:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["source"] == {"parameter": "filter"} and needle in err["detail"], err["detail"]


def test_list_form_equals_matches_any_of_its_values(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    names = {g["attributes"]["name"]: g["id"] for g in sb.truth.records("list")}
    r = get(http, sb, "/api/lists/", {"filter": 'equals(name,["Newsletter","Winback"])'})
    assert sorted(d["id"] for d in r.json()["data"]) == sorted([names["Newsletter"], names["Winback"]])
    profiles = [p["id"] for p in sb.truth.records("profile")[:3]]
    quoted = ",".join(f'"{p}"' for p in profiles)
    r = get(http, sb, "/api/profiles/", {"filter": f"equals(id,[{quoted}])"})
    assert sorted(d["id"] for d in r.json()["data"]) == sorted(profiles)


# --- include: JSON:API compound documents -----------------------------------------------------------------

INCLUDES = [(op, name) for op, spec in load_subset()["operations"].items() if op.startswith("GET ")
            for name in ((spec["parameters"].get("include") or {}).get("schema", {}).get("items", {}).get("enum") or [])]


def _concrete(sb, http, op):
    template = op.split(" ", 1)[1]
    if "{" not in template:
        return template
    first = first_id_of(lambda path, params: get(http, sb, path, params).json(), template.split("/")[2])
    return template.replace("{id}", first).replace("{job_id}", first)


@pytest.fixture(scope="module")
def job_sandbox():
    """A private sandbox holding one finished bulk import job into a list (writes stay off the shared one)."""
    import time

    from klaviyo_dagster.sandbox import run_sandbox

    with run_sandbox(seed=7, scale="small") as sb:
        s = requests.Session()
        s.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                          "Content-Type": "application/vnd.api+json"})
        list_id = s.get(sb.base_url + "/api/lists").json()["data"][0]["id"]
        body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "inc@example.com"}}]}},
            "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}}}}
        job = s.post(sb.base_url + "/api/profile-bulk-import-jobs", json=body).json()["data"]["id"]
        for _ in range(100):
            if s.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job}").json()["data"]["attributes"]["status"] == "complete":
                break
            time.sleep(0.05)
        yield sb, s, job, list_id


def test_import_job_include_lists_links_and_includes_its_list(job_sandbox):
    sb, s, job, list_id = job_sandbox
    doc = s.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job}", params={"include": "lists",
                                                                             "fields[list]": "name"}).json()
    assert doc["data"]["relationships"]["lists"]["data"] == [{"type": "list", "id": list_id}]
    assert [(x["type"], x["id"], set(x["attributes"])) for x in doc["included"]] == [("list", list_id, {"name"})]


@pytest.mark.parametrize("op,name", [i for i in INCLUDES if "bulk-import" not in i[0]])
def test_every_declared_include_carries_linkage_on_every_resource(http, klaviyo_sandbox, op, name):
    sb = klaviyo_sandbox
    path = _concrete(sb, http, op)
    params = {"include": name}
    if "/api/campaigns" in path and "{" not in op.split(" ", 1)[1]:
        params["filter"] = "equals(messages.channel,'email')"
    r = get(http, sb, path, params)
    assert r.status_code == 200, r.text
    doc = r.json()
    primary = doc["data"] if isinstance(doc["data"], list) else [doc["data"]]
    assert primary and isinstance(doc["included"], list)
    linked = set()
    for res in primary:
        data = res["relationships"][name]["data"]  # Singer's tap reads this unconditionally
        assert data is None or isinstance(data, (list, dict))
        linked |= {(x["type"], x["id"]) for x in (data if isinstance(data, list) else [data] if data else [])}
    keys = [(x["type"], x["id"]) for x in doc["included"]]
    assert len(keys) == len(set(keys)), "included resources appear once each"
    assert set(keys) <= linked | {(r["type"], r["id"]) for r in doc["included"]}
    assert {k for k in linked if k[0] in {"metric", "profile", "campaign-message", "flow-action", "list"}} <= set(keys)


def test_included_resources_are_deduplicated_and_take_sparse_fieldsets(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    r = get(http, sb, "/api/events/", {"include": "metric,profile", "page[size]": 200,
                                         "fields[metric]": "name", "fields[profile]": "email"})
    doc = r.json()
    metrics = [x for x in doc["included"] if x["type"] == "metric"]
    linked = {e["relationships"]["metric"]["data"]["id"] for e in doc["data"]}
    assert sorted(m["id"] for m in metrics) == sorted(linked) and len(doc["data"]) == 200 > len(metrics)
    assert all(set(m["attributes"]) == {"name"} for m in metrics)
    assert all(set(x["attributes"]) <= {"email"} for x in doc["included"] if x["type"] == "profile")
    r = get(http, sb, "/api/flows/", {"include": "flow-actions", "fields[flow-action]": "created"}).json()
    actions = [x for x in r["included"] if x["type"] == "flow-action"]
    assert actions and all(set(a["attributes"]) == {"created"} for a in actions)
    assert {a["id"] for a in actions} == {x["id"] for f in r["data"] for x in f["relationships"]["flow-actions"]["data"]}


# --- custom metrics -----------------------------------------------------------------------------------------


def test_custom_metrics_and_their_member_metrics(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    metrics = {m["id"]: m["attributes"]["name"] for m in sb.truth.records("metric")}
    doc = get(http, sb, "/api/custom-metrics/", {"include": "metrics", "fields[metric]": "name"}).json()
    assert len(doc["data"]) == 3
    revenue = next(c for c in doc["data"] if c["attributes"]["name"] == "Revenue (all orders)")
    members = [x["id"] for x in revenue["relationships"]["metrics"]["data"]]
    assert sorted(metrics[m] for m in members) == ["Fulfilled Order", "Placed Order"]
    assert [g["metric_id"] for g in revenue["attributes"]["definition"]["metric_groups"]] == members
    assert {x["id"] for x in doc["included"]} == {x["id"] for c in doc["data"] for x in c["relationships"]["metrics"]["data"]}
    one = get(http, sb, f"/api/custom-metrics/{revenue['id']}/").json()["data"]
    assert one["attributes"] == revenue["attributes"]
    rel = get(http, sb, f"/api/custom-metrics/{revenue['id']}/relationships/metrics/").json()["data"]
    assert [x["id"] for x in rel] == members
    full = get(http, sb, f"/api/custom-metrics/{revenue['id']}/metrics/").json()["data"]
    assert [x["attributes"]["name"] for x in full] == [metrics[m] for m in members]
    assert get(http, sb, "/api/custom-metrics/nope/").status_code == 404


def test_events_metric_id_filter_refuses_a_custom_metric_as_the_spec_says(http, klaviyo_sandbox):
    sb = klaviyo_sandbox
    cid = get(http, sb, "/api/custom-metrics/").json()["data"][0]["id"]
    for flt in (f'equals(metric_id,"{cid}")', f'equals(metric_id,["{cid}"])'):
        r = get(http, sb, "/api/events/", {"filter": flt})
        assert r.status_code == 400
        err = error_of(r)
        assert err["source"] == {"parameter": "filter"}
        assert "custom metrics are not supported in the metric_id filter" in err["detail"]
        assert f"/api/custom-metrics/{cid}/relationships/metrics" in err["detail"]


def test_readme_lists_the_served_revisions_and_every_change():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### As strict as Klaviyo", 1)[1].split("\n## ", 1)[0]
    assert ", ".join(revisions.PUBLISHED) in section.replace("\n  ", " ")
    assert "2026-01-15, 2026-04-15 and 2026-07-15" in section
    for change in revisions.CHANGES:
        assert f"| {change.revision} |" in section and (change.value or change.parameter) in section, change
