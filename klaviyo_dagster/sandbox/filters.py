"""Klaviyo's `filter` query language for the sandbox: parse, check against an endpoint, evaluate.

Grammar: a comma-separated list of conditions (AND); a condition is `op(field,value)`, `op(field)` for
`has`, or `and(cond, cond, ...)`. Values: 'single' or "double" quoted strings, lists `["a","b"]`,
ISO 8601 datetimes (`2026-01-01T00:00:00Z`, with an offset, or a bare date), integers and decimals,
`true`/`false`, `null`. Which fields and operators an endpoint accepts comes from the spec subset's
`allowed` map; anything else is a `FilterError` whose message names the problem and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

OPERATORS = {
    "equals", "greater-than", "greater-or-equal", "less-than", "less-or-equal", "any", "contains",
    "contains-any", "contains-all", "starts-with", "ends-with", "has",
}
COMPARISONS = {"greater-than", "greater-or-equal", "less-than", "less-or-equal"}
DATETIME_FIELDS = {
    "created", "updated", "datetime", "timestamp", "created_at", "updated_at", "scheduled_at", "joined_group_at",
    "subscriptions.email.marketing.list_suppressions.timestamp",
    "subscriptions.email.marketing.suppression.timestamp",
}
BOOLEAN_FIELDS = {"archived", "is_active", "is_starred", "is_processing"}
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
_NUMBER_RE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_TOKEN_RE = re.compile(r"""\s*(?:(?P<punct>[(),\[\]])|(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<bare>[^\s(),\[\]'"]+))""")


class FilterError(ValueError):
    """A filter the endpoint cannot accept; the message says what and how to fix it."""


@dataclass(frozen=True)
class Condition:
    op: str
    field: str
    value: Any = None  # str | int | float | bool | None | DateTimeValue | list
    bare: bool = False  # the value was an unquoted token


@dataclass(frozen=True)
class DateTimeValue:
    ms: int
    text: str


def parse_datetime(text: str) -> int:
    """ISO 8601 (naive = UTC) -> epoch milliseconds."""
    t = text.strip()
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise FilterError(f"cannot read the filter near {text[pos:pos + 20]!r}: check quotes and brackets")
        kind = m.lastgroup or "bare"
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, punct: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"filter {self.text!r} ends early: expected {punct or 'more'}; "
                              "conditions look like equals(field,'value')")
        if punct is not None and tok != ("punct", punct):
            raise FilterError(f"filter {self.text!r}: expected {punct!r} but found {tok[1]!r}; "
                              "conditions look like equals(field,'value')")
        self.i += 1
        return tok

    def conditions(self) -> list[Condition]:
        out = self.condition()
        while self.peek() == ("punct", ","):
            self.take(",")
            out += self.condition()
        return out

    def condition(self) -> list[Condition]:
        kind, op = self.take()
        if kind != "bare":
            raise FilterError(f"filter {self.text!r}: expected an operator such as equals( but found {op!r}")
        self.take("(")
        if op == "and":
            out = self.conditions()
            self.take(")")
            return out
        if op in ("or", "not"):
            raise FilterError(f"filter operator {op!r} is not supported by this endpoint; "
                              "join conditions with commas or and(...) instead")
        if op not in OPERATORS:
            raise FilterError(f"unknown filter operator {op!r}; use one of {', '.join(sorted(OPERATORS))}")
        fkind, field = self.take()
        if fkind != "bare":
            raise FilterError(f"filter {self.text!r}: the first argument of {op}() must be a field name, "
                              f"not {field!r}")
        if op == "has":
            self.take(")")
            return [Condition(op, field)]
        self.take(",")
        value, bare = self.value()
        self.take(")")
        return [Condition(op, field, value, bare)]

    def value(self) -> tuple[Any, bool]:
        kind, text = self.take()
        if kind == "str":
            body = text[1:-1]
            return re.sub(r"\\(.)", r"\1", body), False
        if (kind, text) == ("punct", "["):
            items: list[Any] = []
            if self.peek() == ("punct", "]"):
                self.take("]")
                return items, False
            while True:
                items.append(self.value()[0])
                if self.peek() == ("punct", ","):
                    self.take(",")
                    continue
                self.take("]")
                return items, False
        if kind == "bare":
            low = text.lower()
            if low in ("true", "false"):
                return low == "true", True
            if low == "null":
                return None, True
            if _DATETIME_RE.fullmatch(text) and not _NUMBER_RE.fullmatch(text):
                try:
                    return DateTimeValue(parse_datetime(text), text), True
                except ValueError:
                    raise FilterError(f"{text!r} is not a valid ISO 8601 datetime "
                                      "(use e.g. 2026-01-01T00:00:00Z)") from None
            if _NUMBER_RE.fullmatch(text):
                return (float(text) if any(c in text for c in ".eE") else int(text)), True
            return text, True
        raise FilterError(f"filter {self.text!r}: unexpected {text!r} where a value was expected")


def parse_filter(text: str) -> list[Condition]:
    """Parse a filter expression into a flat AND-list of conditions."""
    if not text or not text.strip():
        raise FilterError("the filter parameter is empty: give a condition such as equals(field,'value')")
    p = _Parser(text)
    conds = p.conditions()
    if p.peek() is not None:
        raise FilterError(f"filter {text!r}: unexpected {p.peek()[1]!r} after a complete condition; "
                          "separate conditions with commas")
    return conds


def check_allowed(conds: list[Condition], allowed: dict[str, list[str]]) -> list[Condition]:
    """Check fields, operators and value types against the endpoint's `allowed` map; coerce values."""
    out = []
    for c in conds:
        if c.field not in allowed:
            raise FilterError(f"filtering on {c.field!r} is not supported by this endpoint; "
                              f"filterable fields: {', '.join(sorted(allowed))}")
        if c.op not in allowed[c.field]:
            raise FilterError(f"operator {c.op!r} is not allowed on {c.field!r}; allowed: "
                              f"{', '.join(allowed[c.field])}")
        out.append(_coerce(c))
    return out


def _coerce(c: Condition) -> Condition:
    if c.op == "has":
        return c
    if c.op in ("any", "contains-any", "contains-all"):
        if not isinstance(c.value, list):
            raise FilterError(f"{c.op}({c.field},...) needs a list value such as [\"a\",\"b\"]")
        return Condition(c.op, c.field, [_scalar(c.field, v, c.op) for v in c.value], c.bare)
    return Condition(c.op, c.field, _scalar(c.field, c.value, c.op, c.bare), c.bare)


def _scalar(field: str, value: Any, op: str, bare: bool = False) -> Any:
    if field in DATETIME_FIELDS:
        if isinstance(value, DateTimeValue):
            return value
        if isinstance(value, str):
            try:
                return DateTimeValue(parse_datetime(value), value)
            except ValueError:
                pass
        if field == "timestamp" and isinstance(value, int) and not isinstance(value, bool):
            return DateTimeValue(value * 1000, str(value))
        raise FilterError(f"{op}({field},...) needs an ISO 8601 datetime such as 2026-01-01T00:00:00Z, "
                          f"got {value!r}")
    if field in BOOLEAN_FIELDS:
        if isinstance(value, bool):
            return value
        raise FilterError(f"{op}({field},...) needs true or false, got {value!r}")
    if isinstance(value, DateTimeValue):
        value = value.text
        bare = True
    if bare and isinstance(value, str):
        raise FilterError(f"string values must be quoted: write {op}({field},\"{value}\")")
    if isinstance(value, list):
        raise FilterError(f"{op}({field},...) takes a single value; use any({field},[...]) for several")
    return value


def to_ms(value: Any) -> int | None:
    """A record's datetime value (ISO string or ms) -> ms."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return parse_datetime(value)


def matches(c: Condition, value: Any) -> bool:
    """Does a record's `value` for `c.field` satisfy condition `c`?"""
    op = c.op
    if op == "has":
        return value is not None
    target = c.value
    if isinstance(target, DateTimeValue) or (op == "any" and target and isinstance(target[0], DateTimeValue)):
        value = to_ms(value)
        target = [t.ms for t in target] if isinstance(target, list) else target.ms
    if op == "equals":
        return value == target
    if op == "any":
        return value in target
    if value is None:
        return False
    try:
        if op == "greater-than":
            return value > target
        if op == "greater-or-equal":
            return value >= target
        if op == "less-than":
            return value < target
        if op == "less-or-equal":
            return value <= target
    except TypeError:
        return False
    if op == "contains":
        return target in value if isinstance(value, (str, list)) else False
    if op == "starts-with":
        return isinstance(value, str) and value.startswith(target)
    if op == "ends-with":
        return isinstance(value, str) and value.endswith(target)
    if op == "contains-any":
        return isinstance(value, list) and any(t in value for t in target)
    if op == "contains-all":
        return isinstance(value, list) and all(t in value for t in target)
    return False


def window(conds: list[Condition], field: str) -> tuple[int | None, int | None]:
    """The inclusive [lo, hi] ms bounds that the conditions on `field` put on it (whole-second data)."""
    lo = hi = None
    for c in conds:
        if c.field != field or not isinstance(c.value, DateTimeValue):
            continue
        ms = c.value.ms
        if c.op == "greater-than":
            b = ms + 1
            lo = b if lo is None else max(lo, b)
        elif c.op == "greater-or-equal":
            lo = ms if lo is None else max(lo, ms)
        elif c.op == "less-than":
            b = ms - 1
            hi = b if hi is None else min(hi, b)
        elif c.op == "less-or-equal":
            hi = ms if hi is None else min(hi, ms)
        elif c.op == "equals":
            lo = ms if lo is None else max(lo, ms)
            hi = ms if hi is None else min(hi, ms)
    return lo, hi
