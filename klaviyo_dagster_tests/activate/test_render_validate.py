"""Rendering rows into Klaviyo profiles and validating them (pure functions, no server needed)."""

import datetime as dt
from decimal import Decimal

import numpy as np
import orjson
import pandas as pd

from klaviyo_dagster.activate.render import (
    ProfileColumns,
    build_render_plan,
    profile_identifiers,
    render_profile,
)
from klaviyo_dagster.activate.validate import MAX_PROFILE_BYTES, profile_problem


def _render(row: dict, **mapping) -> dict:
    plan = build_render_plan(list(row), ProfileColumns(**mapping))
    return render_profile(row, plan)


def test_identifiers_attributes_location_and_properties_land_where_klaviyo_expects_them():
    row = {
        "email": "Ada@Example.com ",
        "phone_number": "+14155552671",
        "external_id": 42.0,
        "klaviyo_profile_id": "01HXYZ",
        "first_name": "Ada",
        "last_name": None,
        "location_city": "Boston",
        "country": "US",
        "latitude": 42.36,
        "order_count": np.int64(7),
        "lifetime_value": Decimal("123.50"),
        "vip": np.bool_(True),
        "last_order_at": pd.Timestamp("2026-03-01T10:00:00Z"),
        "tags": np.array(["a", "b"]),
        "nickname": float("nan"),
        "updated_at": dt.datetime(2026, 1, 1),
    }
    profile = _render(row, exclude=("updated_at",))
    assert profile == {
        "type": "profile",
        "id": "01HXYZ",
        "attributes": {
            "email": "Ada@Example.com",
            "phone_number": "+14155552671",
            "external_id": "42",
            "first_name": "Ada",
            "location": {"city": "Boston", "country": "US", "latitude": 42.36},
            "properties": {
                "order_count": 7,
                "lifetime_value": 123.5,
                "vip": True,
                "last_order_at": "2026-03-01T10:00:00+00:00",
                "tags": ["a", "b"],
            },
        },
    }
    orjson.dumps(profile)  # plain JSON types only


def test_nulls_and_blank_identifiers_are_omitted_and_json_properties_column_is_merged():
    row = {"email": "  ", "external_id": "x1", "properties": '{"plan": "gold", "seats": 3}', "note": None}
    profile = _render(row)
    assert profile == {"type": "profile", "attributes": {"external_id": "x1",
                                                           "properties": {"plan": "gold", "seats": 3}}}


def test_column_names_are_configurable():
    row = {"mail": "a@example.com", "cust": "c-1", "email": "not-an-identifier-here"}
    profile = _render(row, email="mail", external_id="cust")
    assert profile["attributes"]["email"] == "a@example.com"
    assert profile["attributes"]["external_id"] == "c-1"
    assert profile["attributes"]["properties"] == {"email": "not-an-identifier-here"}


def test_identifiers_of_a_payload_match_with_or_without_attributes_wrapper():
    wrapped = {"type": "profile", "id": "P1", "attributes": {"email": "A@X.com", "phone_number": "+1"}}
    flat = {"email": "a@x.com", "external_id": "e"}
    assert profile_identifiers(wrapped) == {"id": "P1", "email": "a@x.com", "phone_number": "+1"}
    assert profile_identifiers(flat) == {"email": "a@x.com", "external_id": "e"}


def _problem(attrs: dict, size: int = 100, **extra) -> str | None:
    return profile_problem({"type": "profile", "attributes": attrs, **extra}, size)


def test_validation_accepts_good_rows_and_names_the_problem_of_bad_ones():
    assert _problem({"email": "ada@example.com", "phone_number": "+14155552671"}) is None
    assert _problem({}, id="01HXYZ") is None
    assert "no identifier" in _problem({"first_name": "Ada"})
    assert "invalid email 'ada@'" in _problem({"email": "ada@"})
    assert "not E.164" in _problem({"phone_number": "4155552671"})
    assert "send +14155552671" in _problem({"phone_number": "+1 415 555 2671"})
    assert "not a valid number" in _problem({"phone_number": "+15555550123"})
    reason = _problem({"email": "ada@example.com"}, size=MAX_PROFILE_BYTES + 1)
    assert "per-profile limit" in reason and str(MAX_PROFILE_BYTES + 1) in reason


def test_email_fast_path_agrees_with_email_validator():
    from email_validator import EmailNotValidError, validate_email

    from klaviyo_dagster.activate.validate import email_problem

    cases = ["a@b.com", "a.b@example.com", ".a@b.com", "a..b@b.com", "a@b", "a@foo.test", "a@-x.com", "a@x..com",
             "A+b%c@EXAMPLE.COM", "x" * 65 + "@a.com", "a@" + "b" * 300 + ".com", "a@1.2.3.4", "a@[1.2.3.4]",
             "ü@x.com", "a@exämple.com", "a b@x.com", "a@x_y.com", "a@localhost", "a@x.com.", '"a@b"@x.com']
    for email in cases:
        try:
            validate_email(email, check_deliverability=False)
            expected_ok = True
        except EmailNotValidError:
            expected_ok = False
        assert (email_problem(email) is None) == expected_ok, email
