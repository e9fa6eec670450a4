"""Stand-ins for the rate limiter and fault injector, used only while those modules are absent.

Same interface as `ratelimit.RateLimiter` and `faults.FaultInjector`: everything passes, nothing is
injected. `hooks()` returns the real classes when they can be imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Decision:
    allowed: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    error: dict[str, Any] | None = None


class NullRateLimiter:
    def __init__(self, mode: str = "off", subset: dict[str, Any] | None = None) -> None:
        self.mode = mode

    def check(self, op_key: str, query: dict[str, list[str]], now: float) -> _Decision:
        return _Decision()

    def set_mode(self, mode: str) -> None:
        self.mode = mode


class NullFaultInjector:
    def __init__(self, seed: int, spec: str | None = None) -> None:
        self.seed = seed
        self.spec = spec

    def pick(self, op_key: str) -> None:
        return None

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"faults": "unavailable in this build"}


def hooks() -> tuple[type, type]:
    """(RateLimiter class, FaultInjector class): the real ones when importable."""
    try:
        from klaviyo_dagster.sandbox.ratelimit import RateLimiter
    except ImportError:
        RateLimiter = NullRateLimiter  # type: ignore[assignment,misc]  # noqa: N806
    try:
        from klaviyo_dagster.sandbox.faults import FaultInjector
    except ImportError:
        FaultInjector = NullFaultInjector  # type: ignore[assignment,misc]  # noqa: N806
    return RateLimiter, FaultInjector
