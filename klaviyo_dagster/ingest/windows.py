"""Time windows of partitions: [start, end) in UTC, clamped to now, and the API filters that select them.

A daily partition (or a range of them, for single-run backfills) covers [first day 00:00, last day + 1
00:00) UTC. The window sent to Klaviyo never reaches past now. Filters are half-open so a record stamped
exactly at midnight lands in exactly one partition; where an endpoint lacks ``greater-or-equal`` the
lower bound is widened by a second and rows before ``start`` are dropped after reading.

Sub-windows: ``split`` cuts a window into consecutive half-open sub-windows on whole seconds (Klaviyo's
timestamps are whole seconds): each instant of the window lies in exactly one of them, so read with the
same filters (and the same client-side drop below ``start`` where the API has only ``greater-than``) every
record is read exactly once. ``inside`` is that drop, for one sub-window's interior bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"window {name} must be timezone-aware, got {value!r}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def clamp(self, now: datetime) -> Window:
        """This window with its end no later than ``now`` (possibly empty)."""
        end = min(self.end, now.astimezone(UTC))
        return Window(self.start, max(end, self.start))

    def days(self) -> list[datetime]:
        """Start of every UTC day the window touches (the partition values it replaces)."""
        day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        while day < self.end:
            out.append(day)
            day += DAY
        return out

    def as_dict(self) -> dict[str, str]:
        return {"start": iso(self.start), "end": iso(self.end)}


def iso(value: datetime) -> str:
    """``2026-01-02T03:04:05Z`` (UTC, whole seconds unless there are microseconds)."""
    value = value.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return value.strftime(fmt)


def day_start(value: datetime) -> datetime:
    """Midnight UTC of ``value``'s day."""
    return value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def parse_partition_key(key: str) -> datetime:
    """A daily partition key (``2026-01-02``) as midnight UTC."""
    return datetime.strptime(key[:10], "%Y-%m-%d").replace(tzinfo=UTC)


def split_at(window: Window, boundaries: Sequence[datetime]) -> list[Window]:
    """``window`` cut at ``boundaries`` (those strictly inside it, in order, duplicates dropped)."""
    cuts = sorted({b.astimezone(UTC) for b in boundaries if window.start < b.astimezone(UTC) < window.end})
    edges = [window.start, *cuts, window.end]
    return [Window(a, b) for a, b in zip(edges, edges[1:], strict=False)]


def split(window: Window, parts: int) -> list[Window]:
    """``window`` in about ``parts`` equal consecutive sub-windows, cut on whole seconds."""
    if parts <= 1 or window.empty:
        return [window]
    step = (window.end - window.start) / parts
    cuts = []
    for i in range(1, parts):
        cut = window.start + step * i
        cuts.append(cut.replace(microsecond=0))
    return split_at(window, cuts)


def inside(records: list[Mapping[str, Any]], key: str, lower: datetime | None,
           upper: datetime | None) -> list[Mapping[str, Any]]:
    """The records whose ``attributes[key]`` lies in [lower, upper) (None: unbounded on that side).

    A record whose cursor is missing or unreadable is kept (the flattener decides about it).
    """
    if lower is None and upper is None:
        return records
    lo_text = lower.isoformat() if lower is not None else None
    hi_text = upper.isoformat() if upper is not None else None
    fast = all(t is None or len(t) == 25 for t in (lo_text, hi_text))
    out = []
    for rec in records:
        raw = (rec.get("attributes") or {}).get(key)
        if fast and type(raw) is str and len(raw) == 25 and raw.endswith("+00:00"):
            if (lo_text is None or raw >= lo_text) and (hi_text is None or raw < hi_text):
                out.append(rec)
            continue
        stamp = parse_utc(raw)
        if stamp is None or ((lower is None or stamp >= lower) and (upper is None or stamp < upper)):
            out.append(rec)
    return out


def parse_utc(raw: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (None when missing or unreadable)."""
    if not raw or not isinstance(raw, str):
        return None
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def estimate_pages(records: list[Mapping[str, Any]], key: str, window: Window) -> tuple[float, datetime]:
    """(pages the window holds, where its records start), from its first page (records in cursor order).

    The first page spans [first, last] of the cursors: the rest of the window, up to its end, holds about
    ``(end - first) / (last - first)`` such pages. Where records start is the first cursor (whole second).
    """
    stamps = [s for s in (parse_utc((r.get("attributes") or {}).get(key)) for r in records) if s is not None]
    if not stamps:
        return 1.0, window.start
    first = max(window.start, min(stamps).replace(microsecond=0))
    covered = (max(stamps) - first).total_seconds()
    total = (window.end - first).total_seconds()
    if covered <= 0:
        return math.inf, first
    return max(1.0, total / covered), first


def cursor_filter(field: str, window: Window, lower_op: str, upper_op: str, lower_slack_seconds: int) -> str:
    """``lower_op(field,start - slack),upper_op(field,end)`` in Klaviyo's filter syntax."""
    lower = window.start - timedelta(seconds=lower_slack_seconds)
    return f"{lower_op}({field},{iso(lower)}),{upper_op}({field},{iso(window.end)})"
