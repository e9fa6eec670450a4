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
from typing import Any

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
    hits = [v for v in violations if v.pointer == pointer and message in v.message]
    assert hits, [str(v) for v in violations]
    assert hits[0].op_key == op_key and hits[0].status == status
    assert op_key in str(hits[0]) and str(status) in str(hits[0])


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
