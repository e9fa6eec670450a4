"""Sandbox fault injection: the injector's rules and determinism, then each fault kind seen over HTTP."""

from __future__ import annotations

import pytest
import requests

from klaviyo_dagster.sandbox.faults import Fault, FaultInjector, parse_spec
from klaviyo_dagster_tests.sandbox.sandbox_http import call, sandbox

MIX = "429:0.05,503:0.02,reset:0.01,truncate:0.01,slow:0.02@0.5"


def labels(injector: FaultInjector, op: str, n: int) -> list[str | None]:
    return [None if f is None else f.label for f in (injector.pick(op) for _ in range(n))]


# --- pure logic -----------------------------------------------------------------------------------------


def test_parse_spec_forms() -> None:
    rules = parse_spec(MIX + ",GET /api/profiles=503:next3,GET /api/lists*=429:every10@2.5")
    assert [r.describe() for r in rules] == [
        {"kind": "429", "share": 0.05},
        {"kind": "503", "share": 0.02},
        {"kind": "reset", "share": 0.01},
        {"kind": "truncate", "share": 0.01},
        {"kind": "slow", "share": 0.02, "param": 0.5},
        {"kind": "503", "next": 3, "op": "GET /api/profiles"},
        {"kind": "429", "every": 10, "op": "GET /api/lists*", "param": 2.5},
    ]
    assert parse_spec("") == [] and parse_spec(" , ") == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("503", "KIND:WHEN"),
        ("503:often", "KIND:WHEN"),
        ("teapot:0.1", "not a 4xx/5xx status"),
        ("200:0.1", "not a 4xx/5xx status"),
        ("503:1.5", r"must lie in \[0, 1\]"),
        ("slow:0.1@soon", "not a number"),
        ("truncate:0.1@1.5", "out of range"),
        ("503:every0", "every must be >= 1"),
    ],
)
def test_parse_spec_rejects_with_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_shares_are_deterministic_for_a_seed_and_near_their_values() -> None:
    a = labels(FaultInjector(seed=11, spec=MIX), "GET /api/events", 20_000)
    b = labels(FaultInjector(seed=11, spec=MIX), "GET /api/events", 20_000)
    c = labels(FaultInjector(seed=12, spec=MIX), "GET /api/events", 20_000)
    assert a == b
    assert a != c
    for label, share in {"429": 0.05, "503": 0.02, "reset": 0.01, "truncate": 0.01, "slow": 0.02}.items():
        assert abs(a.count(label) / len(a) - share) < 0.006, label
    assert a.count(None) / len(a) == pytest.approx(0.89, abs=0.01)


def test_counts_by_kind() -> None:
    injector = FaultInjector(seed=3, spec=MIX)
    picked = labels(injector, "GET /api/profiles", 2_000)
    assert injector.counts == {k: picked.count(k) for k in {p for p in picked if p}}
    assert injector.snapshot()["requests"] == 2_000


def test_fault_details() -> None:
    injector = FaultInjector(spec="429:1@2.5")
    assert injector.pick("GET /api/flows") == Fault(kind="status", label="429", status=429, retry_after=3)
    injector.configure({"spec": "slow:1@0.25"})
    assert injector.pick("x").delay == 0.25
    injector.configure({"spec": "truncate:1"})
    assert injector.pick("x").fraction == 0.5
    injector.configure({"spec": "reset:1"})
    assert injector.pick("x").kind == "reset"
    injector.configure({"spec": "502:1"})
    fault = injector.pick("x")
    assert (fault.kind, fault.status) == ("status", 502)


def test_schedules_next_and_every_with_op_glob() -> None:
    injector = FaultInjector(spec="GET /api/profiles=503:next3,GET /api/lists*=429:every4")
    assert labels(injector, "GET /api/events", 5) == [None] * 5
    assert labels(injector, "GET /api/profiles", 5) == ["503", "503", "503", None, None]
    assert labels(injector, "GET /api/lists/{id}/profiles", 8) == [None, None, None, "429"] * 2
    assert labels(injector, "GET /api/lists", 4) == [None, None, None, "429"]
    assert injector.counts == {"503": 3, "429": 3}


def test_runtime_configure_append_seed_and_clear() -> None:
    injector = FaultInjector(seed=5)
    assert labels(injector, "GET /api/events", 50) == [None] * 50
    injector.fail_next(2, kind=500, op="GET /api/events")
    injector.configure({"rules": [{"kind": "reset", "next": 1}], "append": True})
    assert labels(injector, "GET /api/events", 4) == ["500", "500", "reset", None]
    injector.configure({"spec": "503:0.5", "seed": 9})
    first = labels(injector, "GET /api/events", 100)
    injector.configure({"seed": 9})
    assert labels(injector, "GET /api/events", 100) == first
    injector.clear()
    assert labels(injector, "GET /api/events", 100) == [None] * 100
    injector.configure({"reset_counts": True})
    assert injector.counts == {}


@pytest.mark.parametrize(
    "config",
    [
        {"spec": "503:0.1", "rules": []},
        {"rules": [{"share": 0.1}]},
        {"rules": [{"kind": "503", "share": 0.1, "next": 2}]},
        {"rules": [{"kind": "503", "probability": 0.1}]},
        {"faults": "503:0.1"},
        {"seed": "x"},
    ],
)
def test_bad_runtime_config_changes_nothing(config: dict) -> None:
    injector = FaultInjector(spec="503:next1")
    with pytest.raises(ValueError):
        injector.configure(config)
    assert labels(injector, "GET /api/events", 2) == ["503", None]


# --- over HTTP: each kind as a raw client sees it ---------------------------------------------------------


def statuses(handle, path: str, n: int) -> list[int]:
    with requests.Session() as session:
        return [call(handle, "GET", path, session=session).status_code for _ in range(n)]


def test_http_status_faults_and_schedule() -> None:
    with sandbox(faults="GET /api/metrics=503:next2,GET /api/flows=429:next1@3,GET /api/lists=502:every3") as handle:
        first = call(handle, "GET", "/api/metrics")
        assert first.status_code == 503
        (error,) = first.json()["errors"]
        assert error["status"] == 503 and {"id", "code", "title", "detail"} <= set(error)
        assert statuses(handle, "/api/metrics", 2) == [503, 200]
        throttled = call(handle, "GET", "/api/flows")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
        assert throttled.json()["errors"][0]["code"] == "throttled"
        assert statuses(handle, "/api/lists", 6) == [200, 200, 502, 200, 200, 502]
        assert handle.faults.counts == {"503": 2, "429": 1, "502": 2}


def test_http_reset_truncate_and_slow() -> None:
    with sandbox(faults="GET /api/metrics=reset:next1,GET /api/templates=truncate:next1,GET /api/flows=slow:next1@1") as handle:
        with pytest.raises(requests.ConnectionError):
            call(handle, "GET", "/api/metrics")
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            call(handle, "GET", "/api/templates")
        # Slow: a client whose read timeout is shorter than the delay gives up; the next answer is prompt.
        with pytest.raises(requests.ReadTimeout):
            call(handle, "GET", "/api/flows", timeout=0.2)
        for path in ("/api/metrics", "/api/templates", "/api/flows"):
            assert call(handle, "GET", path).status_code == 200
        assert handle.faults.counts == {"reset": 1, "truncate": 1, "slow": 1}


def test_http_seeded_shares_repeat() -> None:
    runs = []
    for _ in range(2):
        with sandbox(seed=42, faults="503:0.3,500:0.1") as handle:
            runs.append(statuses(handle, "/api/metrics", 30))
    assert runs[0] == runs[1]
    assert {200, 503, 500} <= set(runs[0])
    with sandbox(seed=43, faults="503:0.3,500:0.1") as handle:
        assert statuses(handle, "/api/metrics", 30) != runs[0]


def test_http_runtime_switch_by_handle_and_admin_route() -> None:
    with sandbox() as handle:
        assert statuses(handle, "/api/metrics", 3) == [200] * 3
        handle.faults.configure({"spec": "GET /api/metrics=500:next2"})
        assert statuses(handle, "/api/metrics", 3) == [500, 500, 200]
        admin = requests.post(handle.base_url + "/__sandbox/faults", json={"spec": "503:1"}, timeout=30)
        assert admin.status_code < 300
        assert statuses(handle, "/api/metrics", 2) == [503, 503]
        bad = requests.post(handle.base_url + "/__sandbox/faults", json={"spec": "teapot:1"}, timeout=30)
        assert bad.status_code == 400 and "teapot" in bad.text
        assert statuses(handle, "/api/metrics", 1) == [503]  # a refused config changed nothing
        requests.post(handle.base_url + "/__sandbox/faults", json={"spec": ""}, timeout=30).raise_for_status()
        assert statuses(handle, "/api/metrics", 2) == [200, 200]


def test_after_write_kinds_parse_and_say_when_they_act() -> None:
    rules = parse_spec("POST /api/profile-bulk-import-jobs=503-after:next1,reset-before:0.1,429-after:next1")
    assert [r.describe() for r in rules] == [
        {"kind": "503-after", "next": 1, "op": "POST /api/profile-bulk-import-jobs"},
        {"kind": "reset-before", "share": 0.1},
        {"kind": "429-after", "next": 1},
    ]
    assert rules[0].fault() == Fault(kind="status", label="503-after", status=503, after_write=True)
    assert rules[1].fault() == Fault(kind="reset", label="reset-before", after_write=False)
    assert rules[2].fault().retry_after == 1  # the 429 default Retry-After holds for 429-after too
    assert parse_spec("reset:next1")[0].fault().after_write  # a plain reset handles the request first
    assert not parse_spec("503:next1")[0].fault().after_write
    with pytest.raises(ValueError, match="NNN-after"):
        parse_spec("oops-after:0.1")


def test_http_write_faults_commit_or_not_as_their_kind_says() -> None:
    """The client's view is the same (a 503, a reset); whether the job exists behind it differs by kind."""
    body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "after.write@example.com"}}]}}}}
    op = "POST /api/profile-bulk-import-jobs"
    with sandbox(faults=f"{op}=503-after:next1,{op}=reset-before:next1,{op}=reset:next1,{op}=503:next1") as handle:
        answers = []
        for _ in range(4):
            try:
                answers.append(call(handle, "POST", "/api/profile-bulk-import-jobs", json_body=body).status_code)
            except requests.ConnectionError:
                answers.append("reset")
        assert answers == [503, "reset", "reset", 503]
        jobs = handle.truth.import_jobs()
        # 503-after and reset created a job each; reset-before and a plain 503 created none.
        assert len(jobs) == 2
        assert all(j["total_count"] == 1 and j["rows"] == [{"email": "after.write@example.com"}] for j in jobs)
        assert handle.faults.counts == {"503-after": 1, "reset-before": 1, "reset": 1, "503": 1}
        assert call(handle, "POST", "/api/profile-bulk-import-jobs", json_body=body).status_code == 202
        assert len(handle.truth.import_jobs()) == 3
