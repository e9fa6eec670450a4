"""Query-parameter validation for the sandbox, driven by the spec subset, and JSON:API errors.

For each operation the subset lists the query parameters it declares, their schemas (enums for `sort`,
`fields[...]`, `include`, `additional-fields[...]`; default/minimum/maximum for `page[size]`) and the
`allowed` filter fields and operators. Anything outside that is a 400 whose JSON:API error names the
parameter (`source.parameter`) and says how to fix it. Repeated query keys: the last value wins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from klaviyo_dagster.sandbox.filters import Condition, FilterError, check_allowed, parse_filter
from klaviyo_dagster.sandbox.paging import CursorError, decode_cursor
from klaviyo_dagster.sandbox.revisions import lacking, lacking_detail

TITLES = {400: "Invalid input.", 401: "Authentication credentials were not provided.",
          403: "You do not have permission to perform this action.", 404: "Not found.",
          405: "Method not allowed.", 409: "Conflict.", 413: "Request entity too large.",
          415: "Unsupported media type.", 429: "Request was throttled.", 500: "A server error occurred.",
          502: "Bad gateway.", 503: "Service unavailable.", 504: "Gateway timeout."}


class ApiError(Exception):
    """An error answered as a JSON:API `errors` document."""

    def __init__(self, status: int, code: str, detail: str, *, parameter: str | None = None,
                 pointer: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or TITLES.get(status, "Error.")
        self.parameter = parameter
        self.pointer = pointer
        self.headers = headers or {}

    def error(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.parameter is not None:
            source["parameter"] = self.parameter
        if self.pointer is not None:
            source["pointer"] = self.pointer
        return {"id": str(uuid.uuid4()), "status": self.status, "code": self.code, "title": self.title,
                "detail": self.detail, "source": source}

    def doc(self) -> dict[str, Any]:
        return {"errors": [self.error()]}


def bad(detail: str, parameter: str | None = None, pointer: str | None = None) -> ApiError:
    return ApiError(400, "invalid", detail, parameter=parameter, pointer=pointer)


@dataclass
class Params:
    """The validated query of one request."""

    filters: list[Condition] = field(default_factory=list)
    size: int | None = None
    cursor: dict[str, Any] | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    additional: dict[str, set[str]] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    sort: str | None = None
    desc: bool = False
    raw: dict[str, str] = field(default_factory=dict)

    def conds(self, name: str) -> list[Condition]:
        return [c for c in self.filters if c.field == name]

    def extra(self, rtype: str, name: str) -> bool:
        return name in self.additional.get(rtype, set())


def cursor_token(value: str) -> str:
    """The cursor token of a `page[cursor]` value as clients send it.

    The official SDK cuts the token out of links.next after `page%5Bcursor%5D` and keeps the `=` (it sends
    `page[cursor]=%3D<token>`), which Klaviyo serves, so a leading `=` is dropped (issued cursors are unpadded
    base64url and never contain one). The SDK cuts only https links: against the sandbox's http URL it sends
    the whole links.next URL, so a link of this API is read the same way (Klaviyo's links are always https).
    """
    if value.startswith(("http://", "https://")):
        found = parse_qs(urlsplit(value).query).get("page[cursor]")
        if found:
            value = found[-1]
    return value.lstrip("=")


def _enum(schema: dict[str, Any]) -> list[str] | None:
    if schema.get("type") == "array":
        return schema.get("items", {}).get("enum")
    return schema.get("enum")


def parse_params(op: dict[str, Any], query: dict[str, list[str]], *, op_key: str = "",
                 revision: str | None = None) -> Params:
    """Validate `query` (repeated keys: last wins) against operation `op` of the spec subset.

    With `revision` (and `op_key`), a parameter, value or filter that revision lacks is refused too.
    """
    declared = {name: p for name, p in op["parameters"].items() if p["in"] == "query"}
    raw = {k: v[-1] for k, v in query.items()}
    for name in raw:
        if name not in declared:
            accepted = ", ".join(sorted(declared)) or "none"
            raise bad(f"'{name}' is not a valid query parameter for this endpoint; accepted: {accepted}",
                      parameter=name)
    for name, p in declared.items():
        if p.get("required") and name not in raw:
            raise bad(f"the '{name}' query parameter is required for this endpoint", parameter=name)
    out = Params(raw=raw)
    for name, value in raw.items():
        schema = declared[name]["schema"]
        if name == "page[size]":
            try:
                size = int(value)
            except ValueError:
                raise bad(f"page[size] must be an integer, got {value!r}", parameter=name) from None
            lo, hi = schema.get("minimum", 1), schema.get("maximum")
            if size < lo or (hi is not None and size > hi):
                raise bad(f"page[size] must be between {lo} and {hi}, got {size}", parameter=name)
            out.size = size
        elif name == "page[cursor]":
            try:
                out.cursor = decode_cursor(cursor_token(value))
            except CursorError as e:
                raise bad(str(e), parameter=name) from None
        elif name == "filter":
            try:
                out.filters = check_allowed(parse_filter(value), declared[name].get("filters") or {})
            except FilterError as e:
                raise bad(f"invalid filter: {e}", parameter=name) from None
        elif name == "sort":
            allowed = _enum(schema) or []
            if value not in allowed:
                raise bad(f"'{value}' is not a valid sort for this endpoint; allowed: {', '.join(allowed)}",
                          parameter=name)
            out.desc = value.startswith("-")
            out.sort = value.lstrip("-")
        else:
            items = [v.strip() for v in value.split(",") if v.strip()] if value else []
            allowed = _enum(schema)
            if allowed is not None:
                for item in items:
                    if item not in allowed:
                        raise bad(f"'{item}' is not a valid value of {name}; allowed: {', '.join(allowed)}",
                                  parameter=name)
            if name.startswith("fields["):
                out.fields[name[7:-1]] = items
            elif name.startswith("additional-fields["):
                out.additional[name[18:-1]] = set(items)
            elif name == "include":
                out.include = items
    if revision is not None:
        change = lacking(op_key, revision, raw, [(c.field, c.op) for c in out.filters])
        if change is not None:
            raise bad(lacking_detail(change, revision), parameter=change.parameter)
    return out
