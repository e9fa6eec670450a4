"""Adaptive concurrency per endpoint bucket: how many cursor chains may read one endpoint at once.

Klaviyo answers a page in hundreds of milliseconds, so one chain of requests reaches only a fraction of an
endpoint's rate limit; more chains in parallel fill it. How many is enough depends on latency, page cost and
who else uses the account, so each bucket's limit is found while reading, like TCP's congestion window:

- **grow** by one chain for each answer that went out without waiting in the client's rate limiter (latency,
  not pacing, is what holds the endpoint back, so another chain adds throughput) while the consumer keeps up
  (the pages queue is not full);
- **hold** when the limiter made the request wait (pacing binds: another chain would only queue) or the
  consumer is behind;
- **halve** on a 429 (at most once per ``cooldown`` seconds: a burst of 429s from one overload is one signal).

The limit stays within ``[minimum, maximum]``. Thread-safe; the clock is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# A limiter wait shorter than this is not pacing (lock and clock jitter).
PACED_S = 0.002


class AdaptiveLimit:
    """The chain limit of one endpoint bucket."""

    def __init__(
        self,
        initial: int = 4,
        maximum: int = 16,
        minimum: int = 1,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}, {maximum}")
        self.minimum, self.maximum = minimum, maximum
        self.limit = max(minimum, min(maximum, initial))
        self.peak = self.limit
        self.cooldown = cooldown
        self._clock = clock
        self._last_cut = -float("inf")
        self._lock = threading.Lock()
        self.grown = self.held = self.cuts = 0

    def observe(self, waited: float, status: int, backlog_full: bool = False) -> int:
        """Adapt to one answer (``status`` 0: no answer, e.g. a broken connection); returns the new limit."""
        with self._lock:
            if status == 429:
                now = self._clock()
                if now - self._last_cut >= self.cooldown:
                    self._last_cut = now
                    cut = max(self.minimum, self.limit // 2)
                    self.cuts += cut < self.limit
                    self.limit = cut
            elif 200 <= status < 400:
                if waited <= PACED_S and not backlog_full:
                    if self.limit < self.maximum:
                        self.limit += 1
                        self.grown += 1
                        self.peak = max(self.peak, self.limit)
                else:
                    self.held += 1
            return self.limit

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"limit": self.limit, "peak": self.peak, "grown": self.grown, "held": self.held, "cuts": self.cuts}
