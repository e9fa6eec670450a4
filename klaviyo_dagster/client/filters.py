"""Klaviyo `filter` expressions, written in the forms Klaviyo accepts.

Each endpoint takes, per field, certain operators with a single value, a list value or no value (e.g. on
`GET /api/lists` and `/api/segments` the `name` field only takes the list form: `equals(name,["x"])`).
Strings are quoted (double quotes unless the text holds one), booleans and numbers are bare, datetimes
are bare ISO 8601 in UTC (`2026-01-01T00:00:00Z`; a quoted datetime is an invalid filter). Conditions
joined by commas mean AND.

    join(equals_any("name", ["VIP"]), greater_than("updated", since))
    -> 'equals(name,["VIP"]),greater-than(updated,2026-01-01T00:00:00Z)'
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

Value = str | bool | int | float | datetime


def quote(text: str) -> str:
    """A quoted filter string: double quotes, or single quotes when the text holds a double quote."""
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise ValueError(f"{text!r} holds both quote characters; Klaviyo's filter syntax cannot express it")


def value(v: Value) -> str:
    """One filter value in Klaviyo's syntax."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError(f"datetime {v!r} has no timezone: pass an aware datetime (UTC)")
        v = v.astimezone(UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if v.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, (int, float)):
        return repr(v)
    return quote(str(v))


def _list(values: Iterable[Value]) -> str:
    items = [value(v) for v in values]
    if not items:
        raise ValueError("a list filter needs at least one value")
    return "[" + ",".join(items) + "]"


def equals(field: str, v: Value) -> str:
    """`equals(field,value)`: the single-value form."""
    return f"equals({field},{value(v)})"


def equals_any(field: str, values: Iterable[Value]) -> str:
    """`equals(field,["a","b"])`: the list form of equals (matches any of the values)."""
    return f"equals({field},{_list(values)})"


def any_of(field: str, values: Iterable[Value]) -> str:
    """`any(field,["a","b"])`."""
    return f"any({field},{_list(values)})"


def compare(op: str, field: str, v: Value) -> str:
    """`greater-than`, `greater-or-equal`, `less-than` or `less-or-equal` with one value."""
    if op not in ("greater-than", "greater-or-equal", "less-than", "less-or-equal"):
        raise ValueError(f"{op!r} is not a comparison operator")
    return f"{op}({field},{value(v)})"


def greater_than(field: str, v: Value) -> str:
    return compare("greater-than", field, v)


def less_than(field: str, v: Value) -> str:
    return compare("less-than", field, v)


def join(*conditions: str) -> str:
    """Conditions joined by commas (AND); empty ones are dropped."""
    return ",".join(c for c in conditions if c)
