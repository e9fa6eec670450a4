"""Shared bench helpers: result records, machine info, the printed table, fixed-window counting, timers.

A benchmark returns a `Figure`: the ratio (`value`), its `target` and direction, whether it was `met`, the
raw measurements the ratio was computed from and the settings used. `window_counts` turns request send
times into counts per fixed window, the way Klaviyo (and the sandbox) count them.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil

UTC = timezone.utc


@dataclass
class Figure:
    """One benchmark's headline ratio with the measurements behind it."""

    name: str
    value: float | None
    target: float
    direction: str  # ">=" or "<=" (value compared to target)
    unit: str = "ratio"
    measurements: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    extra: list[Figure] = field(default_factory=list)  # secondary figures (e.g. a 429 share)
    note: str = ""
    seconds: float = 0.0

    @property
    def met(self) -> bool:
        return meets(self.value, self.target, self.direction)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["met"] = self.met
        out["extra"] = [e.to_json() for e in self.extra]
        return out


def meets(value: float | None, target: float, direction: str) -> bool:
    """`value` against `target` in `direction` (">=", "<=", "=="); None or NaN never meets."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if direction == ">=":
        return value >= target
    if direction == "<=":
        return value <= target
    if direction == "==":
        return math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12)
    raise ValueError(f"direction must be '>=', '<=' or '==', got {direction!r}")


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when the denominator is 0."""
    return None if not denominator else numerator / denominator


def window_counts(times: Iterable[float], window: float) -> dict[int, int]:
    """Counts per fixed window ``[k*window, (k+1)*window)`` of the clock the times are on."""
    if not window > 0:
        raise ValueError(f"window must be > 0, got {window!r}")
    return dict(Counter(int(t // window) for t in times))


def full_windows(times: Sequence[float], window: float, started: float, ended: float) -> list[int]:
    """Counts of the fixed windows lying wholly inside ``[started, ended]``, in order (0 for empty ones)."""
    counts = window_counts(times, window)
    first = math.ceil(started / window - 1e-9)
    last = math.floor(ended / window + 1e-9) - 1
    return [counts.get(k, 0) for k in range(first, last + 1)]


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1_5_15": [round(x, 2) if x is not None else None for x in load],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class Timer:
    """Wall clock and this process's CPU time around a block: ``with Timer() as t: ...; t.wall, t.cpu``."""

    def __enter__(self) -> Timer:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "share":
        return f"{value * 100:.2f}%"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(figures: Sequence[Figure]) -> str:
    """The printed table: one row per figure (and its secondary figures)."""
    rows = [("benchmark", "value", "target", "met", "what")]
    for fig in figures:
        for f in (fig, *fig.extra):
            rows.append((f.name, fmt_value(f.value, f.unit), f"{f.direction} {fmt_value(f.target, f.unit)}",
                         "yes" if f.met else "NO", f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)
