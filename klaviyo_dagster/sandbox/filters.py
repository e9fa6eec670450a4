"""Klaviyo's `filter` query language for the sandbox: parse, check against an endpoint, evaluate.

Grammar: a comma-separated list of conditions (AND); a condition is `op(field,value)`, `op(field)` for
`has`, or `and(cond, cond, ...)`. Values: 'single' or "double" quoted strings, lists `["a","b"]`, bare
tokens (datetimes, numbers, `true`/`false`, `null`).

What an endpoint accepts comes from the spec's `x-klaviyo-filters` (the subset's `filters` map, derived
by scripts/derive_spec.py): per field, the operators allowed for each value form (`single`: one value,
`list`: `["a","b"]`, `none`: `has(field)`) and the value's type (string, boolean, number, integer,
`date-time`, an enum). So on lists and segments `equals(name,["x"])` is served and `equals(name,"x")` is
not; `equals(id,"x")` and `equals(id,["x","y"])` both are. Datetimes are bare, in the forms Klaviyo's
datetime guide documents: `YYYY-MM-DDTHH:MM:SS` with optional fraction, `Z` or `+hh:mm` offset (naive =
UTC), `T` or a space between date and time; a quoted datetime or a bare date is refused. Strings are
quoted. Anything else is a `FilterError` whose message names the problem and the fix.
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
DOCUMENTED_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([Zz]|[+-]\d{2}:?\d{2})?")
_NUMBER_RE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_TOKEN_RE = re.compile(r"""\s*(?:(?P<punct>[(),\[\]])|(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<bare>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?|[^\s(),\[\]'"]+))""")
EXAMPLE_DATETIME = "2026-01-01T00:00:00Z"


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
            if re.fullmatch(r"\d{2}:?\d{2}", tok[1]):
                raise FilterError(f"filter {self.text!r}: a datetime offset reads as a space before {tok[1]!r}: "
                                  "URL-encode the '+' of an offset as %2B, or use Z")
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
            return Quoted(re.sub(r"\\(.)", r"\1", body)), False
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
                return BareDateTime(text), True
            if _NUMBER_RE.fullmatch(text):
                return (float(text) if any(c in text for c in ".eE") else int(text)), True
            return text, True
        raise FilterError(f"filter {self.text!r}: unexpected {text!r} where a value was expected")


class Quoted(str):
    """A value written in quotes (a string)."""


class BareDateTime(str):
    """An unquoted token shaped like a date or datetime (checked against the documented forms later)."""


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


def check_allowed(conds: list[Condition], filters: dict[str, dict[str, Any]]) -> list[Condition]:
    """Check each condition against the endpoint's `x-klaviyo-filters` map; coerce values.

    `filters`: {field: {"operators": {"single"|"list"|"none": [ops]}, "value": {"type", "format"?, "enum"?}}}.
    """
    out = []
    for c in conds:
        spec = filters.get(c.field)
        if spec is None:
            raise FilterError(f"filtering on {c.field!r} is not supported by this endpoint; "
                              f"filterable fields: {', '.join(sorted(filters))}")
        forms: dict[str, list[str]] = spec.get("operators") or {}
        form = "none" if c.op == "has" else "list" if isinstance(c.value, list) else "single"
        if c.op not in forms.get(form, []):
            raise FilterError(_form_error(c, form, forms))
        out.append(_coerce(c, form, spec.get("value") or {}))
    return out


def _example(field: str, op: str, form: str, vtype: dict[str, Any]) -> str:
    if form == "none":
        return f"{op}({field})"
    value = _example_value(vtype)
    return f"{op}({field},[{value}])" if form == "list" else f"{op}({field},{value})"


def _example_value(vtype: dict[str, Any]) -> str:
    if vtype.get("enum"):
        return f'"{vtype["enum"][0]}"'
    if vtype.get("format") == "date-time":
        return EXAMPLE_DATETIME
    return {"boolean": "true", "number": "1", "integer": "1"}.get(vtype.get("type", ""), '"x"')


def _form_error(c: Condition, form: str, forms: dict[str, list[str]]) -> str:
    offered = [f for f in ("single", "list", "none") if c.op in forms.get(f, [])]
    if offered:
        how = {"single": "one value", "list": 'a list value such as ["a","b"]', "none": "no value"}
        return (f"{c.op}({c.field},...) takes {how[offered[0]]} on this endpoint, not {how[form]}: write e.g. "
                f"{_example(c.field, c.op, offered[0], {})}")
    allowed = "; ".join(f"{f}: {', '.join(ops)}" for f, ops in forms.items() if ops)
    return f"operator {c.op!r} is not allowed on {c.field!r}; allowed ({allowed})"


def _coerce(c: Condition, form: str, vtype: dict[str, Any]) -> Condition:
    if form == "none":
        return c
    if form == "list":
        return Condition(c.op, c.field, [_scalar(c, v, vtype) for v in c.value], c.bare)
    return Condition(c.op, c.field, _scalar(c, c.value, vtype), c.bare)


def _scalar(c: Condition, value: Any, vtype: dict[str, Any]) -> Any:
    kind, fmt, enum = vtype.get("type"), vtype.get("format"), vtype.get("enum")
    where = f"{c.op}({c.field},...)"
    if fmt == "date-time":
        if isinstance(value, Quoted):
            raise FilterError(f"{where}: datetimes are not quoted in Klaviyo filters; write "
                              f"{c.op}({c.field},{value if DOCUMENTED_DATETIME.fullmatch(value) else EXAMPLE_DATETIME})")
        if isinstance(value, BareDateTime) and DOCUMENTED_DATETIME.fullmatch(value):
            try:
                return DateTimeValue(parse_datetime(value), str(value))
            except ValueError:
                pass
        raise FilterError(f"{where} needs an ISO 8601 datetime with a time, such as {EXAMPLE_DATETIME} or "
                          f"2026-01-01T00:00:00+00:00 (a + must be URL-encoded as %2B), got {value!r}")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise FilterError(f"{where} needs true or false (unquoted), got {value!r}")
    if kind in ("number", "integer"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (kind == "number" or isinstance(value, int)):
            return value
        raise FilterError(f"{where} needs an unquoted {kind}, got {value!r}")
    if not isinstance(value, Quoted):
        shown = value if not isinstance(value, bool) else str(value).lower()
        raise FilterError(f"string values must be quoted: write {c.op}({c.field},\"{shown}\")")
    if enum and str(value) not in enum:
        raise FilterError(f"{where}: {str(value)!r} is not one of {', '.join(enum)}")
    return str(value)


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
    if isinstance(target, DateTimeValue) or (isinstance(target, list) and target and isinstance(target[0], DateTimeValue)):
        value = to_ms(value)
        target = [t.ms for t in target] if isinstance(target, list) else target.ms
    if op in ("equals", "any") and isinstance(target, list):  # the list form: any of the values
        return value in target
    if op == "equals":
        return value == target
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
    """The inclusive [lo, hi] ms bounds that the conditions on `field` put on it (whole-second data).

    Datetimes bound by their instant; numbers (the events `timestamp` field) are epoch seconds."""
    lo = hi = None
    for c in conds:
        if c.field != field:
            continue
        if isinstance(c.value, DateTimeValue):
            ms = c.value.ms
        elif isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
            ms = int(c.value * 1000)  # a number-typed time field (events `timestamp`) is epoch seconds
        else:
            continue
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
