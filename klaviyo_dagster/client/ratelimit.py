"""Client-side rate limiter: paces each Klaviyo endpoint bucket just under its tier.

Klaviyo counts requests per account and endpoint in fixed windows (1 s burst, 60 s steady, a daily cap
on some writes). Per bucket the limiter keeps:

- a sliding log of send times per window (a deque of at most ``limit`` entries): a request waits until
  fewer than ``limit`` were sent in the last ``window * (1 + margin)``; every fixed window the server
  counts lies inside such a sliding window, so a lone client does not trip a 429;
- a GCRA pacer at the steady rate with a tolerance of a quarter of the steady budget: a short run goes
  at burst speed, a long one is spread evenly over the steady window instead of spending it in the
  first seconds and stalling;
- ``blocked_until``, set by a 429's Retry-After; a 429 also halves the pace (AIMD: others share the
  account, as a lone paced client is not throttled), at most once per throttle episode (429s of requests
  already in flight while the bucket is held do not cut again) and never below a quarter of the rate.
  Recovery: as soon as a success's ``RateLimit-Remaining`` shows nobody else used the window, the full
  pace at once (the server says the room is ours); otherwise linearly in time, from the floor back to
  the full rate within one steady window, whether or not requests go out;
- per window a server budget, set only when ``RateLimit-Remaining`` shows more use than this client
  made (other apps or runs share the account): at most that many more until ``RateLimit-Reset``.

Windows start as the tier table's times ``scale`` (a time-scaled sandbox) and are replaced by the
server's ``RateLimit-Limit`` policies (``"10, 10;w=1, 150;w=60"``; the first number names the window
``RateLimit-Remaining`` refers to) when those differ: the server is the authority, in real seconds.
The other documented forms are adopted too (`adopt`): one policy (``"700;w=60"``) replaces the window of
nearest length, a bare number (``"700"``) the limit of the window nearest it.
``scale == 0`` switches pacing off. A request reserves its slot under a short lock and sleeps outside
it, so threads share a bucket correctly. Per request the work is a few deque operations and no sleep
while budget remains.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from klaviyo_dagster.client.tiers import Bucket

# Safety margins on every window: relative (server/client clock and latency jitter) and absolute.
WINDOW_MARGIN = 0.02
WINDOW_SLACK_S = 0.003
# Lowest share of the steady rate a bucket slows to after repeated 429s.
MIN_SHARE = 0.25
# Steady windows the additive increase takes from MIN_SHARE back to the full rate (with no server headers).
RECOVERY_WINDOWS = 1.0


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


def adopt(
    windows: list[tuple[int, float]], current: int | None, policies: list[tuple[int, float]]
) -> tuple[list[tuple[int, float]], int | None]:
    """The windows to use after a ``RateLimit-Limit`` in any of Klaviyo's documented forms, and the limit
    ``RateLimit-Remaining`` refers to.

    - combined (``"10, 10;w=1, 150;w=60"``, two or more policies): the server's windows replace ours;
    - one policy (``"150;w=60"``): it replaces the window nearest its length; Remaining refers to it;
    - a bare number (``"700"``): the limit of the window whose limit is nearest it (by ratio), window kept.
    """
    if len(policies) >= 2 or not windows:
        return policies, current
    if policies:
        (n, w), = policies
        k = min(range(len(windows)), key=lambda i: abs(math.log(windows[i][1] / w)))
        return [(n, w) if i == k else win for i, win in enumerate(windows)], n if current is None else current
    if current is None:
        return [], None
    k = min(range(len(windows)), key=lambda i: abs(math.log(windows[i][0] / current)))
    return [(current, win[1]) if i == k else win for i, win in enumerate(windows)], current


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value.split(",")[0].strip())
    except ValueError:
        return None
    return out if math.isfinite(out) else None


class BucketLimiter:
    """Pacing state of one endpoint bucket (see module docstring). Windows are in real seconds."""

    def __init__(self, windows: list[tuple[int, float]], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._header: str | None = None
        self._current: int | None = None
        self.blocked_until = 0.0
        self._tat: float | None = None
        self._logs: list[deque[float]] = []
        self._set_windows(windows)

    # -- configuration -------------------------------------------------------------------------
    def _set_windows(self, windows: list[tuple[int, float]]) -> None:
        """Install (limit, seconds) windows, keeping the most recent send times."""
        windows = sorted((max(1, int(n)), float(w)) for n, w in windows if n and w and w > 0)
        recent = max(self._logs, key=len) if self._logs else ()
        self.windows = windows
        self._spans = [w * (1 + WINDOW_MARGIN) + WINDOW_SLACK_S for _, w in windows]
        self._logs = [deque(list(recent)[-n:], maxlen=n) for n, _ in windows]
        self._pairs = list(zip(self._logs, self._spans, strict=True))
        # Server budgets per window, set when others use the account: (requests left, until when).
        self._budgets: list[list[float]] = [[0.0, 0.0] for _ in windows]
        # Steady pacing: the lower rate of the burst and steady windows (a daily cap only caps, via its log).
        _, steady_n, steady_span = min(
            (n / span, n, span) for (n, _), span in zip(windows[:2], self._spans[:2], strict=True)
        )
        self._steady_n, self._steady_span = steady_n, steady_span
        # Waiting out the burst or the steady window is normal pacing; windows beyond those are daily caps.
        self.patience = self._spans[:2][-1]
        self._share_at = self._last_cut = -math.inf
        self._base_interval = steady_span / steady_n
        self._base_tolerance = (max(1, steady_n // 4) - 1) * self._base_interval
        self._apply_share(getattr(self, "share", 1.0))

    def _apply_share(self, share: float) -> None:
        """Pace at ``share`` of the steady rate; below 1 (after a 429: others use the account) no bursts."""
        self.share = share
        self.interval = self._base_interval / share
        self._tolerance = self._base_tolerance if share >= 1.0 else 0.0

    def limits(self) -> list[tuple[int, float]]:
        """The (limit, window seconds) pairs in force."""
        return list(self.windows)

    # -- pacing --------------------------------------------------------------------------------
    def reserve(self, max_wait: float = math.inf) -> float:
        """Reserve the next send slot; return the clock time at which the request may be sent.

        When that is more than ``max_wait`` seconds away (a daily cap), nothing is reserved: the caller
        gets the time and should not send.
        """
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
            for budget in self._budgets:
                if t < budget[1] and budget[0] <= 0:
                    t = budget[1]
            if t - now > max_wait:
                return t
            for budget in self._budgets:
                if t < budget[1]:
                    budget[0] -= 1
            for log in self._logs:
                log.append(t)
            self._tat = (t if tat is None or tat < t else tat) + self.interval
            if self.share < 1.0:  # additive increase in time: floor -> full rate in RECOVERY_WINDOWS
                gained = (1.0 - MIN_SHARE) * (now - self._share_at) / (self._steady_span * RECOVERY_WINDOWS)
                self._share_at = now
                self._apply_share(min(1.0, self.share + gained))
            return t

    # -- adaptation ----------------------------------------------------------------------------
    def observe(self, headers: Mapping[str, str]) -> list[tuple[int, float]] | None:
        """Adapt from a successful response's ``RateLimit-*`` headers.

        Returns the new windows when the server's limits replaced the ones in force, else None.
        """
        raw = headers.get("RateLimit-Limit")
        if raw is None:
            return None
        changed = None
        with self._lock:
            if raw != self._header:
                self._header = raw
                self._current, policies = parse_limit_header(raw)
                policies, self._current = adopt(self.windows, self._current, policies)
                if policies and not _same(policies, self.windows):
                    self._set_windows(policies)
                    changed = list(self.windows)
            remaining = _number(headers.get("RateLimit-Remaining"))
            idx = next((i for i, (n, _) in enumerate(self.windows) if n == self._current), None)
            if remaining is None or idx is None:
                return changed
            limit, window = self.windows[idx]
            log, span = self._pairs[idx]
            now = self._clock()
            used_server = limit - int(remaining)
            used_local = len(log) - bisect.bisect_right(log, now - span)
            # A request or two of difference is latency (a send counted by the server in its window but
            # reserved just before this client's sliding one): only a clear excess means other users.
            if used_server - used_local > max(1, limit // 50):
                # Others share the account: at most `remaining` more until the server's window resets
                # (Reset is whole seconds rounded up, so never longer than the window itself).
                reset = _number(headers.get("RateLimit-Reset"))
                until = now + (window if reset is None else min(max(reset, 0.0), window))
                self._budgets[idx] = [float(max(0, int(remaining))), until]
            elif self.share < 1.0 and now >= self.blocked_until:
                # Nobody else used this window (the server counts no more than we sent): whoever caused
                # the 429s has stopped, so the full pace comes back now rather than in a window's time.
                self._share_at = now
                self._apply_share(1.0)
        return changed

    def throttled(self, retry_after_s: float) -> None:
        """A 429 came back: hold the bucket for ``retry_after_s`` real seconds and halve the pace.

        A lone client paced by this limiter is not throttled, so a 429 means others share the account's
        limit: multiplicative decrease (down to MIN_SHARE of the rate), recovered by ``reserve`` in time
        or at once by ``observe`` when the server shows nobody else uses the window.
        """
        with self._lock:
            now = self._clock()
            # 429s that come back while the bucket is still held answer requests sent before the hold
            # (in flight at once): the same episode, which has been cut for already.
            fresh = now >= self.blocked_until
            self.blocked_until = max(self.blocked_until, now + max(0.0, retry_after_s))
            if fresh and now - self._last_cut >= self._spans[0]:  # at most one cut per burst window, too
                self._last_cut = self._share_at = now
                self._apply_share(max(MIN_SHARE, self.share * 0.5))


class WaitTooLong(Exception):
    """The bucket's next slot is further away than the caller may sleep (e.g. a spent daily cap)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next slot in {wait:.0f} s")
        self.wait = wait


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        n1 == n2 and math.isclose(w1, w2, rel_tol=1e-6) for (n1, w1), (n2, w2) in zip(a, b, strict=True)
    )


class RateLimiter:
    """The buckets of one client, created on first use from the tier table's windows times ``scale``.

    ``scale == 0`` switches pacing off (the client then only waits out a 429's Retry-After).
    """

    def __init__(
        self,
        scale: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (scale >= 0 and math.isfinite(scale)):
            raise ValueError(f"rate_limit_scale must be >= 0 (0 switches pacing off), got {scale!r}")
        self.scale = scale
        self.enabled = scale > 0
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
                    windows = [(n, w * (self.scale or 1.0)) for n, w in bucket.windows()]
                    state = BucketLimiter(windows, clock=self._clock)
                    self._buckets[bucket.key] = state
        return state

    def acquire(self, bucket: Bucket, max_wait: float = math.inf) -> float:
        """Wait until a request in ``bucket`` may be sent; return the seconds waited.

        Raises ``WaitTooLong`` instead of sleeping more than ``max_wait`` seconds or, if longer, the
        bucket's longest sub-hour window (waiting one of those out is normal pacing).
        """
        state = self.bucket(bucket)
        max_wait = max(max_wait, state.patience)
        send_at = state.reserve(max_wait) if self.enabled else state.blocked_until
        wait = send_at - self._clock()
        if wait > 0:
            if wait > max_wait:
                raise WaitTooLong(wait)
            self._sleep(wait)
            return wait
        return 0.0

    def observe(self, bucket: Bucket, headers: Mapping[str, str]) -> list[tuple[int, float]] | None:
        """Feed a successful response's headers to the bucket (no-op when pacing is off)."""
        if not self.enabled:
            return None
        return self.bucket(bucket).observe(headers)
