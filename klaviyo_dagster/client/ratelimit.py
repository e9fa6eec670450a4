"""Client-side rate limiter: paces each Klaviyo endpoint bucket just under its tier.

Klaviyo counts requests per account and endpoint in fixed windows (1 s burst, 60 s steady, a daily cap
on some writes). Per bucket the limiter keeps:

- a sliding log of send times per window (a deque of at most ``limit`` entries): a request waits until
  fewer than ``limit`` were sent in the last ``window * (1 + margin)``; every fixed window the server
  counts is contained in such a sliding window, so a lone client never trips a 429;
- a GCRA pacer at the steady rate with a tolerance of a quarter of the steady budget: a short run goes
  at burst speed, a long one is spread evenly over the steady window instead of spending it in the
  first seconds and stalling;
- a ``blocked_until`` instant set by a 429's Retry-After or by ``RateLimit-Remaining: 0``.

It adapts from the response headers: ``RateLimit-Limit`` (``"10, 10;w=1, 150;w=60"``) replaces the
table's limits when they differ; ``RateLimit-Remaining`` / ``RateLimit-Reset`` reveal requests made by
others sharing the account (they are added to the log) and an exhausted window (the bucket waits for
its reset). ``scale`` multiplies every window length (a time-scaled sandbox). A request reserves its slot
under a short lock and sleeps outside it, so threads share a bucket correctly. Per request the work is
a few deque operations: no sleeping while budget remains.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from klaviyo_dagster.client.tiers import Bucket

# Safety margins on every window: relative (server/client clock and latency jitter) and absolute.
WINDOW_MARGIN = 0.02
WINDOW_SLACK_S = 0.003


def parse_limit_header(value: str | None) -> tuple[int | None, list[tuple[int, float]]]:
    """Parse ``RateLimit-Limit``: ``"10, 10;w=1, 150;w=60"`` -> (10, [(10, 1.0), (150, 60.0)]).

    The first bare number is the quota ``RateLimit-Remaining`` refers to; the ``limit;w=seconds`` items
    are the policies. Malformed items are skipped.
    """
    if not value:
        return None, []
    current: int | None = None
    policies: list[tuple[int, float]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        head, _, rest = item.partition(";")
        try:
            limit = int(float(head))
        except ValueError:
            continue
        if not rest:
            if current is None:
                current = limit
            continue
        for param in rest.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip() == "w":
                try:
                    policies.append((limit, float(val)))
                except ValueError:
                    pass
    policies.sort(key=lambda p: p[1])
    return current, policies


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value.split(",")[0].strip())
    except ValueError:
        return None
    return out if math.isfinite(out) else None


class BucketLimiter:
    """Pacing state of one endpoint bucket (see module docstring)."""

    def __init__(
        self,
        windows: list[tuple[int, float]],
        *,
        scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._scale = scale
        self._header: str | None = None
        self._current: int | None = None
        self.blocked_until = 0.0
        self._tat: float | None = None
        self._set_windows(windows)

    # -- configuration -------------------------------------------------------------------------
    def _set_windows(self, windows: list[tuple[int, float]]) -> None:
        """Install (limit, nominal seconds) windows, keeping the most recent send times."""
        windows = sorted((max(1, int(n)), float(w)) for n, w in windows if n and w)
        old = getattr(self, "_logs", [])
        recent: list[float] = sorted(set().union(*old)) if old else []
        self.windows = windows
        self._spans = [w * self._scale * (1 + WINDOW_MARGIN) + WINDOW_SLACK_S for _, w in windows]
        self._logs = [deque(recent[-n:], maxlen=n) for n, _ in windows]
        self._pairs = list(zip(self._logs, self._spans, strict=True))
        # Steady pacing: the window of the lowest rate; tolerance a quarter of its budget.
        rates = [(n / span, n, span) for (n, _), span in zip(windows, self._spans, strict=True)]
        _, steady_n, steady_span = min(rates)
        self.interval = steady_span / steady_n
        self._tolerance = (max(1, steady_n // 4) - 1) * self.interval

    def limits(self) -> list[tuple[int, float]]:
        """The (limit, nominal window seconds) pairs in force."""
        return list(self.windows)

    # -- pacing --------------------------------------------------------------------------------
    def reserve(self) -> float:
        """Reserve the next send slot; return the clock time at which the request may be sent."""
        with self._lock:
            now = self._clock()
            t = now if now > self.blocked_until else self.blocked_until
            tat = self._tat
            if tat is not None and t < tat - self._tolerance:
                t = tat - self._tolerance
            for log, span in self._pairs:
                if len(log) == log.maxlen and t < log[0] + span:
                    t = log[0] + span
                if log and t < log[-1]:
                    t = log[-1]
            for log in self._logs:
                log.append(t)
            self._tat = (t if tat is None or tat < t else tat) + self.interval
            return t

    # -- adaptation ----------------------------------------------------------------------------
    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt from a successful response's ``RateLimit-*`` headers."""
        raw = headers.get("RateLimit-Limit")
        if raw is None:
            return
        with self._lock:
            if raw != self._header:
                self._header = raw
                current, policies = parse_limit_header(raw)
                self._current = current
                if policies and policies != self.windows:
                    self._set_windows(policies)
            remaining = _number(headers.get("RateLimit-Remaining"))
            if remaining is None:
                return
            # The window Remaining refers to: the policy whose limit is the first bare number.
            idx = next(
                (i for i, (n, _) in enumerate(self.windows) if n == self._current),
                len(self.windows) - 1,
            )
            limit = self.windows[idx][0]
            log, span = self._logs[idx], self._spans[idx]
            now = self._clock()
            if remaining <= 0:
                reset = _number(headers.get("RateLimit-Reset"))
                wait = span if reset is None else min(span, max(0.0, reset * self._scale))
                self.blocked_until = max(self.blocked_until, now + wait)
                return
            # Others sharing the account: the server saw more than this client sent.
            used_server = limit - int(remaining)
            if len(log) + remaining >= limit:
                return
            used_local = sum(1 for ts in log if ts > now - span)
            for _ in range(used_server - used_local):
                log.append(now)

    def throttled(self, retry_after_s: float) -> None:
        """A 429 came back: hold the bucket for ``retry_after_s`` (already in real seconds)."""
        with self._lock:
            self.blocked_until = max(self.blocked_until, self._clock() + max(0.0, retry_after_s))


class RateLimiter:
    """The buckets of one client, created on first use from the tier table's windows."""

    def __init__(
        self,
        scale: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        enabled: bool = True,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"rate_limit_scale must be > 0, got {scale!r}")
        self.scale = scale
        self.enabled = enabled
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, BucketLimiter] = {}
        self._lock = threading.Lock()

    def bucket(self, bucket: Bucket) -> BucketLimiter:
        """The limiter state of ``bucket`` (made on first use)."""
        state = self._buckets.get(bucket.key)
        if state is None:
            with self._lock:
                state = self._buckets.get(bucket.key)
                if state is None:
                    state = BucketLimiter(bucket.windows(), scale=self.scale, clock=self._clock)
                    self._buckets[bucket.key] = state
        return state

    def acquire(self, bucket: Bucket) -> float:
        """Wait until a request in ``bucket`` may be sent; return the seconds waited."""
        if not self.enabled:
            return 0.0
        send_at = self.bucket(bucket).reserve()
        wait = send_at - self._clock()
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0
