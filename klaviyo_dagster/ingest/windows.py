"""Time windows of partitions: [start, end) in UTC, clamped to now, and the API filters that select them.

A daily partition (or a range of them, for single-run backfills) covers [first day 00:00, last day + 1
00:00) UTC. The window sent to Klaviyo never reaches past now. Filters are half-open so a record stamped
exactly at midnight lands in exactly one partition; where an endpoint lacks ``greater-or-equal`` the
lower bound is widened by a second and rows before ``start`` are dropped after reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

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


def cursor_filter(field: str, window: Window, lower_op: str, upper_op: str, lower_slack_seconds: int) -> str:
    """``lower_op(field,start - slack),upper_op(field,end)`` in Klaviyo's filter syntax."""
    lower = window.start - timedelta(seconds=lower_slack_seconds)
    return f"{lower_op}({field},{iso(lower)}),{upper_op}({field},{iso(window.end)})"
