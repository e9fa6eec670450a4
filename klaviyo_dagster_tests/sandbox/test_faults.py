"""Sandbox fault injection: the injector's rules and determinism, then each fault kind seen over HTTP."""

from __future__ import annotations

import pytest

from klaviyo_dagster.sandbox.faults import Fault, FaultInjector, parse_spec

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
