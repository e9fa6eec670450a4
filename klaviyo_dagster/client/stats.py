"""Request counters of a KlaviyoClient, for Dagster metadata and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientStats:
    """Counters since the client was made (or last ``reset()``).

    requests: HTTP attempts sent; pages: documents yielded by ``paginate``; retries: attempts repeated;
    throttled: 429 answers; errors: failed attempts (non-2xx or broken connection, retried or not);
    wait_seconds: time spent pacing in the rate limiter; by_endpoint: requests per rate-limit bucket.
    """

    requests: int = 0
    pages: int = 0
    retries: int = 0
    throttled: int = 0
    errors: int = 0
    wait_seconds: float = 0.0
    by_endpoint: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict (JSON-ready) of the counters."""
        return {
            "requests": self.requests,
            "pages": self.pages,
            "retries": self.retries,
            "throttled": self.throttled,
            "errors": self.errors,
            "wait_seconds": round(self.wait_seconds, 3),
            "by_endpoint": dict(self.by_endpoint),
        }

    def reset(self) -> None:
        """Zero every counter."""
        self.requests = self.pages = self.retries = self.throttled = self.errors = 0
        self.wait_seconds = 0.0
        self.by_endpoint = Counter()
