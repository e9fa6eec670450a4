"""Response latency of the sandbox: a seeded model of how long Klaviyo takes to answer.

A real Klaviyo answers a page in hundreds of milliseconds; a local server in a few. The model gives each
answer a delay of ``(base + per_record * records) * tail`` where ``base`` depends on the operation
(reads, writes), ``records`` is the number of resources in the answer (``data`` plus ``included``) and
``tail`` is a log-normal factor with median 1 (``sigma`` sets how heavy the tail is). The server sleeps
that long in the connection's own thread before it writes the answer: a sleeping thread costs no CPU, so
many slow concurrent requests cost the sandbox nothing but a thread each.

Specs (``--latency``, ``run_sandbox(latency=...)``, ``handle.set_latency``, ``POST /__sandbox/latency``):

- ``off`` (default; also ``none``, ``0``): no added delay;
- ``realistic``: reads 200 ms + 0.1 ms/record, writes 250 ms + 0.05 ms/record, 429s and errors 60 ms,
  log-normal tail sigma 0.35 (a 1,000-event page: median 300 ms, p99 ~680 ms; a 100-profile page 210 ms);
- ``BASE[+PER/record][~SIGMA]``, e.g. ``150ms+0.1ms/record``, ``0.2s``, ``150ms+0.1ms/record~0.5``:
  the same delay for every operation (``ms`` or ``s``; sigma default 0.35, ``~0`` for a fixed delay).

Draws come from one ``random.Random(seed)``: a given sequence of answers gets the same delays on every
run (threads may interleave the sequence differently).
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass

DEFAULT_SIGMA = 0.35
_OFF = frozenset({"", "off", "none", "0", "0ms", "0s", "false", "no"})
_DURATION = r"(\d+(?:\.\d+)?)\s*(ms|s)"
_SPEC = re.compile(rf"^{_DURATION}(?:\s*\+\s*{_DURATION}\s*/\s*record)?(?:\s*~\s*(\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Profile:
    """Delay parameters of one class of answers (seconds)."""

    base: float
    per_record: float = 0.0

    def median(self, records: int) -> float:
        return self.base + self.per_record * max(0, records)


@dataclass(frozen=True)
class LatencySpec:
    """A parsed latency spec: profiles for reads, writes and refusals (429/errors), and the tail."""

    text: str
    read: Profile
    write: Profile
    refusal: Profile
    sigma: float

    @property
    def enabled(self) -> bool:
        return any(p.base > 0 or p.per_record > 0 for p in (self.read, self.write, self.refusal))


OFF = LatencySpec("off", Profile(0.0), Profile(0.0), Profile(0.0), 0.0)
REALISTIC = LatencySpec("realistic", Profile(0.200, 0.0001), Profile(0.250, 0.00005), Profile(0.060), DEFAULT_SIGMA)


def _seconds(value: str, unit: str) -> float:
    return float(value) / (1000.0 if unit == "ms" else 1.0)


def parse_latency(spec: str | None) -> LatencySpec:
    """``off``, ``realistic`` or ``BASE[+PER/record][~SIGMA]`` -> a LatencySpec; ValueError names the forms."""
    text = (spec or "").strip().lower()
    if text in _OFF:
        return OFF
    if text == "realistic":
        return REALISTIC
    m = _SPEC.match(text)
    if not m:
        raise ValueError(
            f"latency {spec!r} is not understood: use 'off', 'realistic' or BASE[+PER/record][~SIGMA], "
            "e.g. '150ms+0.1ms/record' or '0.2s~0'"
        )
    base = _seconds(m.group(1), m.group(2))
    per = _seconds(m.group(3), m.group(4)) if m.group(3) else 0.0
    sigma = float(m.group(5)) if m.group(5) is not None else DEFAULT_SIGMA
    if sigma > 3:
        raise ValueError(f"latency {spec!r}: sigma {sigma} is too large (use 0..3)")
    one = Profile(base, per)
    return LatencySpec(spec.strip(), one, one, one, sigma)


class LatencyModel:
    """Draws the delay of each answer from the spec in force; thread-safe and switchable at runtime."""

    def __init__(self, spec: str | None = "off", seed: int = 42) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"latency-{seed}")
        self.spec = parse_latency(spec)

    def set(self, spec: str | None) -> LatencySpec:
        """Switch to another spec (ValueError when it does not parse; the old one stays in force)."""
        parsed = parse_latency(spec)
        with self._lock:
            self.spec = parsed
        return parsed

    @property
    def enabled(self) -> bool:
        return self.spec.enabled

    def delay(self, method: str, status: int, records: int = 0) -> float:
        """Seconds to hold an answer: by the class of answer (read, write, refusal) and its records."""
        spec = self.spec
        if not spec.enabled:
            return 0.0
        if status == 429 or status >= 400:
            profile = spec.refusal
        elif method == "GET":
            profile = spec.read
        else:
            profile = spec.write
        median = profile.median(records)
        if median <= 0:
            return 0.0
        if spec.sigma <= 0:
            return median
        with self._lock:
            z = self._rng.gauss(0.0, 1.0)
        return median * math.exp(spec.sigma * z)

    def describe(self) -> dict[str, object]:
        """The spec in force (for the admin route)."""
        s = self.spec
        return {
            "latency": s.text,
            "enabled": s.enabled,
            "sigma": s.sigma,
            "read": {"base_ms": s.read.base * 1000, "per_record_ms": s.read.per_record * 1000},
            "write": {"base_ms": s.write.base * 1000, "per_record_ms": s.write.per_record * 1000},
            "refusal": {"base_ms": s.refusal.base * 1000, "per_record_ms": s.refusal.per_record * 1000},
        }
