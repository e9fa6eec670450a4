"""The client's own path -> tier table held against the spec subset (the two readings must agree)."""

from __future__ import annotations

import pytest

from klaviyo_dagster.client.tiers import ROUTES, Tier, find_route, resolve_bucket, scope_hint
from klaviyo_dagster.spec import load_subset

UNIT = {"s": 1.0, "m": 60.0, "d": 86400.0}


def _rate(text: str) -> tuple[int, float]:
    count, unit = text.split("/")
    return int(count), UNIT[unit]


def _windows(limits: dict) -> list[tuple[int, float]]:
    return [_rate(limits[k]) for k in ("burst", "steady", "daily") if k in limits]


def _concrete(template: str) -> str:
    return template.replace("{id}", "AbC123").replace("{job_id}", "job_9")


OPERATIONS = load_subset()["operations"]


@pytest.mark.parametrize("op_key", sorted(OPERATIONS))
def test_table_matches_spec_limits(op_key: str) -> None:
    op = OPERATIONS[op_key]
    method, template = op_key.split(" ", 1)
    path = _concrete(template)
    bucket = resolve_bucket(method, path)
    assert find_route(method, path) is not None, f"{op_key} missing from the client's table"
    assert bucket.windows() == _windows(op["ratelimit"]), op_key
    for condition, limits in (op.get("ratelimit_with") or {}).items():
        name, _, value = condition.partition("=")
        variant = resolve_bucket(method, path, {name: f"subscriptions,{value}"})
        merged = {**op["ratelimit"], **limits}
        assert variant.windows() == _windows(merged), condition
        assert variant.key != bucket.key, "a query variant must be a bucket of its own"


@pytest.mark.parametrize("op_key", sorted(OPERATIONS))
def test_scope_hint_covers_spec_scopes(op_key: str) -> None:
    method, template = op_key.split(" ", 1)
    assert set(OPERATIONS[op_key]["scopes"]) <= set(scope_hint(method, _concrete(template))), op_key


def test_every_table_row_is_a_spec_operation() -> None:
    spec_paths = {k.split(" ", 1)[0] + " " + k.split(" ", 1)[1].replace("{job_id}", "{id}") for k in OPERATIONS}
    for route in ROUTES:
        assert f"{route.method} {route.template}" in spec_paths


def test_resolution_details() -> None:
    assert resolve_bucket("GET", "/api/profiles/").tier is Tier.L  # trailing slash tolerated
    assert resolve_bucket("GET", "/api/events").tier is Tier.XL
    assert resolve_bucket("GET", "/api/flows", tier="xs").tier is Tier.XS  # explicit tier wins
    unknown = resolve_bucket("GET", "/api/accounts")
    assert unknown.tier is Tier.M and unknown.key == "GET /api/accounts"
    # One bucket per endpoint template, whatever the id.
    assert resolve_bucket("GET", "/api/lists/A/profiles").key == resolve_bucket("GET", "/api/lists/B/profiles").key
    with pytest.raises(ValueError, match="use one of XS, S, M, L, XL"):
        Tier.coerce("huge")
