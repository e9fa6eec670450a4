"""Sandbox fidelity: answers match the spec's response schemas, parameters are exactly the spec's.

- The validator (openapi-schema-validator over the spec subset) catches deliberately broken bodies.
- The recorder keeps bounded, deduplicated samples from many threads.
- Over HTTP, for every operation the sandbox serves: every query parameter the spec declares is
  accepted, and every other one (`foo`, `fields[nonsense]`, and the parameters the spec declares only for
  other operations) is refused with 400; the served operations are exactly the subset's.
- Last of the whole session (`fidelity_last`): every body any sandbox of the test run answered is
  validated against its operation's response schema.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from klaviyo_dagster.sandbox import fidelity
from klaviyo_dagster.sandbox.fidelity import (
    ResponseRecorder,
    SpecValidator,
    iter_declared_query_params,
    validate_recorded,
)
from klaviyo_dagster.spec import load_subset
from klaviyo_dagster_tests.sandbox.sandbox_http import call, first_id_of, sandbox

pytest_plugins = ["klaviyo_dagster_tests.fidelity_plugin"]

SUBSET = load_subset()
OPERATIONS = SUBSET["operations"]


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return SpecValidator()


def profile_page(**attributes: Any) -> dict[str, Any]:
    return {
        "data": [
            {
                "type": "profile",
                "id": "01J0000000000000000000000A",
                "attributes": {"email": "ada@example.com", "created": "2026-01-01T00:00:00+00:00", **attributes},
                "links": {"self": "http://127.0.0.1:1/api/profiles/01J0000000000000000000000A"},
            }
        ],
        "links": {"self": "http://127.0.0.1:1/api/profiles", "next": "http://127.0.0.1:1/api/profiles?page%5Bcursor%5D=x"},
    }


ERROR = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.", "detail": "d"}]}


# --- the validator ---------------------------------------------------------------------------------------


def test_valid_bodies_pass(validator: SpecValidator) -> None:
    assert validator.validate("GET /api/profiles", 200, orjson.dumps(profile_page())) == []
    # Nullable fields may be null; `status` in errors is an extra property the spec does not forbid.
    assert validator.validate("GET /api/profiles", 200, profile_page(first_name=None)) == []
    assert validator.validate("GET /api/profiles", 400, orjson.dumps(ERROR)) == []
    assert validator.validate("GET /api/profiles", 503, ERROR) == []
    assert validator.validate("POST /api/lists/{id}/relationships/profiles", 204, b"") == []


@pytest.mark.parametrize(
    ("op_key", "status", "body", "pointer", "message"),
    [
        ("GET /api/profiles", 200, profile_page(email=42), "/data/0/attributes/email", "is not of type 'string'"),
        ("GET /api/profiles", 200, profile_page(created="yesterday"), "/data/0/attributes/created", "date-time"),
        ("GET /api/profiles", 200, {"links": {"self": "x"}}, "", "'data' is a required property"),
        ("GET /api/profiles", 200, profile_page(location=[1]), "/data/0/attributes/location", "type 'object'"),
        ("GET /api/profiles", 200, {"data": [], "links": {"self": "x", "next": None}}, "/links/next", "None"),
        ("GET /api/profiles", 200, {"data": [{"type": "event", "id": "1", "attributes": {}, "links": {"self": "x"}}]},
         "/data/0/type", "'event' is not one of"),
        ("GET /api/profiles", 429, {"errors": [{"id": "x", "status": 429, "code": "throttled", "title": "t"}]},
         "/errors/0", "'detail' is a required property"),
        ("GET /api/profiles", 200, b"{not json", "", "not JSON"),
        ("GET /api/profiles", 200, b"", "", "empty body"),
        ("POST /api/lists/{id}/relationships/profiles", 204, b"{}", "", "declares no body"),
        ("POST /api/lists", 200, ERROR, "", "does not declare status 200"),
        ("GET /api/nothing", 200, ERROR, "", "not an operation of the spec subset"),
    ],
)
def test_violations_are_caught_with_pointer_and_message(
    validator: SpecValidator, op_key: str, status: int, body: Any, pointer: str, message: str
) -> None:
    body = body if isinstance(body, bytes) else orjson.dumps(body)
    violations = validator.validate(op_key, status, body)
    assert violations, f"{op_key} {status} {body!r} was not flagged"
    if pointer:  # a schema violation: the fast screen must refuse it too (else it would hide it)
        assert not validator.screen(validator.schema_pointer(op_key, status)).is_valid(orjson.loads(body))
    hits = [v for v in violations if v.pointer == pointer and message in v.message]
    assert hits, [str(v) for v in violations]
    assert hits[0].op_key == op_key and hits[0].status == status
    assert op_key in str(hits[0]) and str(status) in str(hits[0])


SEGMENT = {"type": "segment", "id": "J6V5dv", "links": {"self": "http://127.0.0.1:1/api/segments/J6V5dv/"},
           "attributes": {"name": "Engaged", "created": "2026-01-01T00:00:00+00:00", "is_active": True}}
CAMPAIGN = {
    "type": "campaign", "id": "01M37ETSQ0EFEG5E08EHMW7CTV", "links": {"self": "http://127.0.0.1:1/api/campaigns/x/"},
    "attributes": {
        "name": "Spring", "status": "Sent", "archived": False, "audiences": {"included": ["XgDgsU"], "excluded": []},
        "send_options": {"use_smart_sending": False}, "send_strategy": {"method": "static", "datetime": "2026-01-02T00:00:00+00:00"},
        "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
        "tracking_options": {"add_tracking_params": True, "is_tracking_clicks": True, "is_tracking_opens": True},
    },
}


def test_sparse_fieldsets_relax_required_attributes_only(validator: SpecValidator) -> None:
    sparse = {**SEGMENT, "attributes": {"name": "Engaged"}}
    doc = {"data": [sparse], "links": {"self": "http://127.0.0.1:1/api/segments/"}}
    full = validator.validate("GET /api/segments", 200, doc)
    assert full and all(v.pointer == "/data/0/attributes" and "is a required property" in v.message for v in full)
    assert "'is_active' is a required property" in [v.message for v in full]
    assert validator.validate("GET /api/segments", 200, doc, {"fields[segment]": ["name"]}) == []
    # Types still count, and so does everything outside attributes.
    wrong = {"data": [{**sparse, "attributes": {"name": 7}}], "links": {"self": "x"}}
    assert validator.validate("GET /api/segments", 200, wrong, (("fields[segment]", ("name",)),))
    no_id = {"data": [{k: v for k, v in sparse.items() if k != "id"}], "links": {"self": "x"}}
    assert validator.validate("GET /api/segments", 200, no_id, {"fields[segment]": ["name"]})


def test_one_of_means_at_least_one(validator: SpecValidator) -> None:
    # Klaviyo's channel variants overlap: a real email campaign's send_options match all three.
    doc = {"data": [CAMPAIGN], "links": {"self": "http://127.0.0.1:1/api/campaigns/"}}
    assert validator.validate("GET /api/campaigns", 200, doc) == []
    bad = {**CAMPAIGN, "attributes": {**CAMPAIGN["attributes"], "send_options": {"use_smart_sending": "yes"}}}
    violations = validator.validate("GET /api/campaigns", 200, {"data": [bad], "links": {"self": "x"}})
    assert [v.pointer for v in violations] == ["/data/0/attributes/send_options"]
    assert "is not of type 'boolean'" in violations[0].message  # the closest alternative's reason


def test_every_declared_response_schema_resolves(validator: SpecValidator) -> None:
    # Each declared answer resolves to a schema (or to no body) and compiles, $refs included: validating
    # a wrong-typed document yields errors instead of raising on an unresolvable reference.
    for op_key, op in OPERATIONS.items():
        for key in op["responses"]:
            status = int(key.replace("XX", "00"))
            if validator.schema_pointer(op_key, status) is None:
                continue
            assert validator.validate(op_key, status, b"[]"), (op_key, key)


# --- the recorder --------------------------------------------------------------------------------------


def test_recorder_dedupes_bounds_and_counts() -> None:
    recorder = ResponseRecorder(per_key=3, max_keys=2, max_bytes=1000)
    for i in range(10):
        recorder.record("GET /api/profiles", "get", 200, b'{"n": %d}' % (i % 5), {"page[size]": ["5"]})
    recorder.record("GET /api/profiles", "GET", 200, b"{}", {"fields[profile]": ["email"]})  # another shape
    recorder.record("GET /api/events", "GET", 200, b"{}", {})  # a third key: beyond max_keys
    recorder.record("GET /api/profiles", "GET", 400, b"x" * 2000, {"fields[profile]": ["email"]})
    kept = recorder.responses()
    assert len([r for r in kept if r.query == (("page[size]", ("5",)),)]) == 3
    assert len({r.body for r in kept}) == len(kept)
    assert recorder.counts == {("GET /api/profiles", 200): 11, ("GET /api/events", 200): 1, ("GET /api/profiles", 400): 1}
    assert recorder.total == 13
    assert recorder.dropped == 2  # the events key and the oversized body
    assert all(r.method == "GET" for r in kept)
    recorder.clear()
    assert recorder.responses() == [] and recorder.total == 0
    # A key's byte budget bounds big pages too; a reservoir sample keeps later bodies a fair chance.
    recorder = ResponseRecorder(per_key=10, max_key_bytes=100)
    for i in range(200):
        recorder.record("GET /api/events", "GET", 200, b"%040d" % i, {})
    kept = recorder.responses()
    assert len(kept) == 2 and sum(len(r.body) for r in kept) <= 100
    assert any(int(r.body) >= 2 for r in kept) and recorder.total == 200


def test_recorder_is_thread_safe() -> None:
    recorder = ResponseRecorder(per_key=5)

    def worker(n: int) -> None:
        for i in range(500):
            recorder.record("GET /api/events", "GET", 200, b"%d-%d" % (n, i), {})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorder.total == 3000
    assert len(recorder.responses()) == 5


def test_validate_recorded_reports_a_bad_body(validator: SpecValidator) -> None:
    recorder = ResponseRecorder()
    recorder.record("GET /api/profiles", "GET", 200, orjson.dumps(profile_page()), {})
    recorder.record("GET /api/profiles", "GET", 200, orjson.dumps(profile_page(email=["x"])), {"include": ["x"]})
    recorder.record("GET /api/profiles", "GET", 429, orjson.dumps(ERROR), {})
    report = validate_recorded(recorder, validator)
    assert (report.checked, report.recorded, report.ok) == (3, 3, False)
    assert [(v.status, v.pointer) for v in report.violations] == [(200, "/data/0/attributes/email")]
    assert "1 schema violations" in report.summary() and "/data/0/attributes/email" in report.summary()


def test_recorder_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fidelity.ENV_VAR, "0")
    assert fidelity.recorder_from_env() is None
    monkeypatch.setenv(fidelity.ENV_VAR, "1")
    assert fidelity.recorder_from_env() is fidelity.global_recorder()


def test_every_operation_declares_its_query_parameters() -> None:
    # The parameter checks below rely on the subset saying where each parameter goes.
    for op_key, op in OPERATIONS.items():
        assert all(p.get("in") in ("query", "path", "header") for p in op["parameters"].values()), op_key
        assert "revision" not in set(iter_declared_query_params(op)), op_key


# --- over HTTP: parameters -------------------------------------------------------------------------------

SERVED_ELSEWHERE = [  # real Klaviyo operations the package does not use: the sandbox must not serve them
    ("GET", "/api/tag-groups"),
    ("GET", "/api/coupons"),
    ("GET", "/api/catalog-items"),
    ("POST", "/api/profiles"),
    ("PATCH", "/api/events"),
    ("PATCH", "/api/lists/{list}"),
    ("DELETE", "/api/lists/{list}"),
    ("DELETE", "/api/profiles/{profile}"),
]
ALL_QUERY_PARAMS = sorted({n for op in OPERATIONS.values() for n in iter_declared_query_params(op)})


def example_value(field_name: str, vtype: dict[str, Any]) -> str:
    """A valid value of one filter field, as the spec's `x-klaviyo-filters` types it."""
    if vtype.get("enum"):
        return f"'{vtype['enum'][0]}'" if field_name != "messages.channel" else "'sms'"
    if vtype.get("format") == "date-time":
        return "2020-01-01T00:00:00Z"
    return {"boolean": "true", "number": "1", "integer": "1"}.get(vtype.get("type", ""), "'x'")


def filter_expressions(op_key: str, filters: dict[str, dict[str, Any]], forms: tuple[str, ...] = ()) -> list[str]:
    """One filter expression per allowed (field, value form, operator), with a value of the field's type."""
    out = []
    for field_name, entry in filters.items():
        value = example_value(field_name, entry.get("value") or {})
        for form, operators in entry["operators"].items():
            if forms and form not in forms:
                continue
            for operator in operators:
                if form == "none":
                    out.append(f"{operator}({field_name})")
                elif form == "list":
                    out.append(f"{operator}({field_name},[{value.replace(chr(39), chr(34))}])")
                else:
                    out.append(f"{operator}({field_name},{value})")
    if op_key == "GET /api/campaigns":  # the channel filter is required on campaigns
        out = [e if "messages.channel" in e else f"equals(messages.channel,'email'),{e}" for e in out]
    return out


def base_query(op_key: str) -> dict[str, str]:
    return {"filter": "equals(messages.channel,'email')"} if op_key == "GET /api/campaigns" else {}


def request_body(op_key: str, ids: dict[str, str]) -> Any:
    if op_key == "POST /api/lists":
        return {"data": {"type": "list", "attributes": {"name": "fidelity"}}}
    if op_key.endswith("/relationships/profiles") and not op_key.startswith("GET"):
        return {"data": [{"type": "profile", "id": ids["profile"]}]}
    if op_key == "POST /api/profile-bulk-import-jobs":
        rows = [{"type": "profile", "attributes": {"email": f"fidelity{k}@example.com"}} for k in range(2)]
        rows += [{"type": "profile", "attributes": {"email": f"not an email {k}"}} for k in range(2)]
        return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": rows}}}}
    if op_key in REPORT_TYPES:
        return report_body(op_key, ids["metric"])
    return ACTIVATION_BODIES.get(op_key)


REPORT_TYPES = {"POST /api/campaign-values-reports": "campaign-values-report",
                "POST /api/flow-values-reports": "flow-values-report",
                "POST /api/flow-series-reports": "flow-series-report"}


def report_body(op_key: str, metric_id: str) -> dict[str, Any]:
    """A valid Reporting API body: last 30 days (series: daily), a few statistics."""
    attrs: dict[str, Any] = {"statistics": ["recipients", "opens", "conversions", "open_rate"],
                             "timeframe": {"key": "last_30_days"}, "conversion_metric_id": metric_id}
    if op_key.endswith("series-reports"):
        attrs["interval"] = "daily"
    return {"data": {"type": REPORT_TYPES[op_key], "attributes": attrs}}


def report_cursor(handle: Any, op_key: str, ids: dict[str, str]) -> str:
    """A page_cursor this report issued (one result a page, so a second page exists)."""
    with handle.semantics_override(report_page_rows=1):
        answer = call(handle, "POST", op_key.split(" ", 1)[1], json_body=request_body(op_key, ids))
    assert answer.status_code == 200, answer.text
    return parse_qs(urlsplit(answer.json()["links"]["next"]).query)["page_cursor"][0]


def _event(unique_id: str) -> dict[str, Any]:
    return {"type": "event", "attributes": {"properties": {"plan": "pro"}, "time": "2026-01-02T03:04:05+00:00",
                                            "value": 1.5, "unique_id": unique_id,
                                            "metric": {"data": {"type": "metric", "attributes": {"name": "Fidelity"}}}}}


def _profiles(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"profiles": {"data": [{"type": "profile", "attributes": {"email": f"fidelity-{key}@example.com", **payload}}]}}


_PROFILE = {"data": {"type": "profile", "attributes": {"email": "fidelity-event@example.com"}}}
ACTIVATION_BODIES: dict[str, Any] = {  # issue 14: events, consent, data-privacy deletion
    "POST /api/events": {"data": {**_event("single"), "attributes": {**_event("single")["attributes"],
                                                                      "profile": _PROFILE}}},
    "POST /api/event-bulk-create-jobs": {"data": {"type": "event-bulk-create-job", "attributes": {
        "events-bulk-create": {"data": [{"type": "event-bulk-create", "attributes": {
            "profile": _PROFILE, "events": {"data": [_event("bulk-1"), _event("bulk-2")]}}}]}}}},
    "POST /api/profile-subscription-bulk-create-jobs": {"data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": _profiles("sub", {"subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}})}},
    "POST /api/profile-subscription-bulk-delete-jobs": {"data": {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": _profiles("unsub", {"subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}})}},
    "POST /api/profile-suppression-bulk-create-jobs": {"data": {
        "type": "profile-suppression-bulk-create-job", "attributes": _profiles("sup", {})}},
    "POST /api/profile-suppression-bulk-delete-jobs": {"data": {
        "type": "profile-suppression-bulk-delete-job", "attributes": _profiles("sup", {})}},
    "POST /api/data-privacy-deletion-jobs": {"data": {"type": "data-privacy-deletion-job", "attributes": {
        "profile": {"data": {"type": "profile", "attributes": {"email": "fidelity-gone@example.com"}}}}}},
}


def concrete_path(op_key: str, ids: dict[str, str]) -> str:
    template = op_key.split(" ", 1)[1]
    kind = template.split("/")[2]  # /api/<kind>/...
    if "{" not in template:
        return template
    key = {"profile-bulk-import-jobs": "job"}.get(kind, kind.rstrip("s"))  # suppression jobs: their own kind
    return template.replace("{id}", ids[key]).replace("{job_id}", ids[key])


def first_id(handle: Any, path: str, params: dict[str, str] | None = None) -> str:
    response = call(handle, "GET", path, params)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data, f"{path} returned no records to take an id from"
    return data[0]["id"]


def discover_ids(handle: Any) -> dict[str, str]:
    ids = {
        "profile": first_id(handle, "/api/profiles", {"page[size]": "1"}),
        "event": first_id(handle, "/api/events", {"page[size]": "1"}),
        "list": first_id(handle, "/api/lists"),
        "segment": first_id(handle, "/api/segments"),
        "campaign": first_id(handle, "/api/campaigns", base_query("GET /api/campaigns")),
        "metric": first_id(handle, "/api/metrics"),
        "flow": first_id(handle, "/api/flows"),
        "template": first_id(handle, "/api/templates"),
        "tag": first_id(handle, "/api/tags"),
        "custom-metric": first_id(handle, "/api/custom-metrics"),
    }
    for kind in ("campaign-messages", "flow-actions", "flow-messages"):  # no collections of their own
        ids[kind[:-1]] = first_id_of(lambda path, params: call(handle, "GET", path, params).json(), kind)
    # Two jobs of two good and two bad rows: every job collection then has a second page at page[size]=1.
    for _ in range(2):
        job = call(handle, "POST", "/api/profile-bulk-import-jobs", json_body=request_body("POST /api/profile-bulk-import-jobs", ids))
        assert job.status_code == 202, job.text
    ids["job"] = job.json()["data"]["id"]
    for op_key in ("POST /api/profile-suppression-bulk-create-jobs", "POST /api/profile-suppression-bulk-delete-jobs"):
        for _ in range(21):  # one more than a page, so the job collections have a cursor to offer
            sup = call(handle, "POST", op_key.split(" ", 1)[1], json_body=request_body(op_key, ids))
            assert sup.status_code == 202, sup.text
        ids[op_key.split("/")[2].rstrip("s")] = sup.json()["data"]["id"]
    for _ in range(300):  # until the job has run (the sandbox completes jobs within about a second)
        status = call(handle, "GET", f"/api/profile-bulk-import-jobs/{ids['job']}").json()["data"]["attributes"]["status"]
        if status == "complete":
            break
        time.sleep(0.05)
    return ids


def value_for(op_key: str, name: str, param: dict[str, Any], handle: Any, path: str) -> list[str]:
    """Valid values of one declared query parameter (several for `filter`: every allowed pair)."""
    schema = param.get("schema", {})
    if name == "filter":
        return filter_expressions(op_key, param.get("filters") or {})
    if name == "page[size]":
        return ["1"]
    if name == "page[cursor]":
        params = {**base_query(op_key)}
        if "page[size]" in OPERATIONS[op_key]["parameters"]:
            params["page[size]"] = "1"
        links = call(handle, "GET", path, params).json().get("links", {})
        if not links.get("next"):
            return []  # a single page: there is no cursor to offer
        return [parse_qs(urlsplit(links["next"]).query)["page[cursor]"][0]]
    enum = schema.get("items", {}).get("enum") if schema.get("type") == "array" else schema.get("enum")
    return [enum[0]] if enum else ["x"]


def error_parameter(response: Any) -> str | None:
    try:
        return response.json()["errors"][0].get("source", {}).get("parameter")
    except (ValueError, KeyError, IndexError, AttributeError):
        return None


@pytest.fixture(scope="session")
def sweep() -> dict[str, list[str]]:
    """Exercise every operation of the subset with each declared parameter and each undeclared one.

    Runs on a private sandbox (writes must not disturb the shared one) that records into the session's
    fidelity recorder like every other. Returns problems by category (empty lists: all good).
    """
    problems: dict[str, list[str]] = {"refused": [], "accepted": [], "uncovered": [], "served": []}
    # job_error: the jobs with bad rows must be accepted so that their import-error pages are recorded too
    with sandbox(seed=42, scale="small", semantics="import_invalid_row=job_error") as handle:
        ids = discover_ids(handle)
        from klaviyo_dagster.sandbox import routes

        handlers = set(getattr(getattr(handle, "_server", None), "_handlers", None) or routes.OPERATIONS)
        for name, served in (("routes.OPERATIONS", set(routes.OPERATIONS)), ("the handler table", handlers)):
            if served != set(OPERATIONS):
                problems["served"].append(f"{name} differs from the subset by {sorted(served ^ set(OPERATIONS))}")
        jobs: list[tuple[str, str, str, dict[str, str], Any, bool, str]] = []
        for op_key, op in OPERATIONS.items():
            method = op_key.split(" ", 1)[0]
            path = concrete_path(op_key, ids)
            body = request_body(op_key, ids)
            declared = {n: p for n, p in op["parameters"].items() if p["in"] == "query"}
            jobs.append((op_key, method, path, base_query(op_key), body, True, ""))  # no optional parameter
            if method == "GET":
                for name, param in declared.items():
                    values = value_for(op_key, name, param, handle, path)
                    if not values:
                        problems["uncovered"].append(f"{op_key} {name}")
                    for value in values:
                        jobs.append((op_key, method, path, {**base_query(op_key), name: value}, body, True, name))
            else:
                for name, param in declared.items():  # writes: e.g. fields[list] on POST /api/lists
                    value = (report_cursor(handle, op_key, ids) if name == "page_cursor"
                             else value_for(op_key, name, param, handle, path)[0])
                    jobs.append((op_key, method, path, {name: value}, body, True, name))
            # Parameters that are not this operation's: typos, nonsense fieldsets, other operations' ones.
            for name in sorted(set(ALL_QUERY_PARAMS) - set(declared)) + ["foo", "fields[nonsense]"]:
                jobs.append((op_key, method, path, {**base_query(op_key), name: "1"}, body, False, name))
            if "filter" in declared:  # a field the operation does not allow, and a disallowed operator
                jobs.append((op_key, method, path, {"filter": "equals(nonsense,'x')"}, body, False, "filter"))
                filters = declared["filter"].get("filters") or {}
                for field_name, entry in filters.items():  # an operator the field does not take
                    allowed = {o for ops in entry["operators"].values() for o in ops}
                    missing = [o for o in ("equals", "greater-than", "less-or-equal") if o not in allowed]
                    if missing and field_name != "messages.channel":
                        one = {field_name: {**entry, "operators": {"single": [missing[0]]}}}
                        jobs.append((op_key, method, path, {"filter": filter_expressions(op_key, one)[0]}, body,
                                     False, "filter"))
                        break
                for field_name, entry in filters.items():  # an operator in a value form the field does not take
                    forms = entry["operators"]
                    for form, other in (("single", "list"), ("list", "single")):
                        wrong = [o for o in forms.get(form, []) if o not in forms.get(other, [])]
                        if wrong and field_name != "messages.channel":
                            one = {field_name: {**entry, "operators": {other: wrong[:1]}}}
                            jobs.append((op_key, method, path, {"filter": filter_expressions(op_key, one)[0]},
                                         body, False, "filter"))
        for method, template in SERVED_ELSEWHERE:
            path = template.replace("{list}", ids["list"]).replace("{profile}", ids["profile"])
            jobs.append((f"{method} {template}", method, path, {}, None, False, ""))

        def run(job: tuple) -> str | None:
            op_key, method, path, params, body, expect_ok, name = job
            response = call(handle, method, path, params, body)
            shown = f"{op_key} ?{params} -> {response.status_code}"
            if expect_ok:
                return None if response.status_code < 300 else f"refused: {shown}: {response.text[:300]}"
            if not name:  # an operation outside the subset
                return None if response.status_code in (404, 405) else f"served: {shown}"
            if response.status_code == 400 and error_parameter(response) == name:
                return None
            return f"accepted: {shown}: {response.text[:200]}"

        with ThreadPoolExecutor(max_workers=8) as pool:
            for outcome in pool.map(run, jobs):
                if outcome:
                    kind, _, text = outcome.partition(": ")
                    problems[kind].append(text)
        problems["requests"] = [str(len(jobs))]
    return problems


def test_every_declared_parameter_is_accepted(sweep: dict[str, list[str]]) -> None:
    assert not sweep["refused"], "\n".join(sweep["refused"])
    # Only a single-page collection (metrics: no page[size], fewer than a page) may leave page[cursor] untried.
    assert sweep["uncovered"] in ([], ["GET /api/metrics page[cursor]"]), sweep["uncovered"]


def test_every_other_parameter_is_refused(sweep: dict[str, list[str]]) -> None:
    assert not sweep["accepted"], "\n".join(sweep["accepted"])


def test_served_operations_are_exactly_the_subsets(sweep: dict[str, list[str]]) -> None:
    assert not sweep["served"], "\n".join(sweep["served"])


# --- last of the session: every body any sandbox answered ----------------------------------------------


def test_every_recorded_response_matches_its_schema(
    sweep: dict[str, list[str]], request: pytest.FixtureRequest, validator: SpecValidator
) -> None:
    recorder = fidelity.global_recorder()
    assert recorder.total > 0, (
        f"no sandbox response was recorded: is {fidelity.ENV_VAR}=1 set (fidelity_plugin) and does the "
        "sandbox call recorder.record?"
    )
    answered = {op for (op, status) in recorder.counts if status < 300}
    assert answered >= set(OPERATIONS), f"operations never answered: {sorted(set(OPERATIONS) - answered)}"
    assert recorder.dropped == 0, (
        f"{recorder.dropped} responses exceeded the session recorder's bounds and would go unvalidated: "
        "raise the bounds in fidelity.global_recorder()"
    )
    report = validate_recorded(recorder, validator)
    plugin = request.config.pluginmanager.get_plugin("klaviyo_dagster_tests.fidelity_plugin")
    plugin.store_report(request.config, report)
    assert report.ok, report.summary()


test_every_recorded_response_matches_its_schema.fidelity_last = True  # the plugin runs it last
