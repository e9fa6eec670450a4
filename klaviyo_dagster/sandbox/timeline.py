"""Monotone timestamps as a function of a record's index, with records placed on UTC midnights.

`Timeline(start_ms, end_ms, n).at(i)` is non-decreasing in `i`, whole seconds, and the first record at or
after each UTC midnight is moved back exactly onto that midnight (so day-partition boundaries are
exercised). Because the timestamps are monotone, a time-window filter is a binary search over indices.
"""

from __future__ import annotations

from datetime import datetime, timezone

DAY_MS = 86_400_000
UTC = timezone.utc


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def iso(ms: int | None) -> str | None:
    """Klaviyo's datetime format: ``2026-07-01T12:00:00+00:00`` (whole seconds, UTC)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, tz=UTC).isoformat()


class Timeline:
    """Timestamps (ms) of `n` records spread over `[start_ms, end_ms]`."""

    __slots__ = ("start", "end", "n", "_span", "_den")

    def __init__(self, start_ms: int, end_ms: int, n: int) -> None:
        self.start = start_ms
        self.end = end_ms
        self.n = n
        self._span = max(end_ms - start_ms, 0)
        self._den = max(n - 1, 1)

    def _raw(self, i: int) -> int:
        t = self.start + (i * self._span) // self._den
        return t - t % 1000

    def at(self, i: int) -> int:
        t = self._raw(i)
        if i > 0:
            midnight = t - t % DAY_MS
            if self._raw(i - 1) < midnight:
                return midnight
        return t

    def first_at_or_after(self, ms: int) -> int:
        """The smallest index whose time is >= ms (n when none)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.at(mid) < ms:
                lo = mid + 1
            else:
                hi = mid
        return lo
