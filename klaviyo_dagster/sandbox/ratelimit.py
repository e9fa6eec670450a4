"""Klaviyo-style rate limiting for the sandbox: fixed windows per account and per endpoint.

Limits come from the spec subset (`operations[op]["ratelimit"]`, read from `x-klaviyo-ratelimit`): a burst
window of 1 second, a steady window of 60 seconds and, for some writes (POST /api/lists), a daily window.
When the query carries a parameter named in `operations[op]["ratelimit_with"]` (for example
`additional-fields[profile]=predictive_analytics` or `additional-fields[list]=profile_count`), the request
is counted in a bucket of its own with those lower limits.

Windows are fixed, like Klaviyo's: a window of length `w` covers `[k*w, (k+1)*w)` of the clock passed to
`check`; every window of the bucket must have room for the request to pass; a refused request is not
counted. One sandbox is one account, so one `RateLimiter` holds the counters of that account.

Modes (`set_mode` or the constructor):

- ``off``: every request passes; the answers still carry the `RateLimit-*` headers computed from the
  real limits and windows (counts keep running, `RateLimit-Remaining` bottoms out at 0).
- ``real``: Klaviyo's limits and windows; over a limit the answer is 429.
- ``scale:F`` (0 < F): every window lasts F times as long, with the same counts (``scale:0.1``: a
  0.1 s burst window and a 6 s steady window), so a benchmark sees the real shape in less time.

Headers, as Klaviyo sends them (IETF RateLimit draft): an allowed request gets
``RateLimit-Limit: 75, 75;w=1, 750;w=60`` (first the limit of the window with the least room left,
then each window's policy), ``RateLimit-Remaining`` and ``RateLimit-Reset`` (whole seconds until that
window resets, rounded up). A refused request gets status 429, ``Retry-After`` (whole seconds, rounded
up, at least 1) and no ``RateLimit-*`` headers. Under ``scale:F`` the window lengths in ``w=`` are the
scaled ones (``w=0.1``) and, because whole seconds are too coarse there, every 429 also carries the
non-standard ``X-Sandbox-Retry-After-Ms`` header: the exact wait in milliseconds, rounded up (sent in
every mode; Klaviyo does not send it).

Header forms (`header_form`, the `ratelimit_header_form` semantics switch): ``combined`` (above, the
form seen in a public client's logs; the default), ``policy`` (only the tightest window's policy,
``RateLimit-Limit: 750;w=60``) and ``bare`` (only its limit, ``RateLimit-Limit: 750``), each documented by
Klaviyo. `l_steady` (the `ratelimit_l_steady` switch): the L tier's steady limit, 750/m as the spec says
(default) or 700/m as Klaviyo's rate-limit guide says; it applies to every operation whose spec limits are
75/s and 750/m.

Each `check` is O(1): a dict lookup, a lock and a few integer operations per window.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HEADER_FORMS", "Decision", "RateLimiter", "parse_mode", "parse_rate"]

HEADER_FORMS = ("combined", "policy", "bare")
L_TIER = ((75, 1.0), (750, 60.0))

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_WINDOW_ORDER = ("burst", "steady", "daily")


@dataclass(slots=True)
class Decision:
    """The limiter's answer for one request.

    `allowed`: pass or refuse. `headers`: the headers to add to the response. `status`: 429 when refused,
    else None. `error`: when refused, the JSON:API error object for the body's `errors` list.
    `retry_after`: when refused, the exact wait in (real, unrounded) seconds.
    """

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None


def parse_rate(text: str) -> tuple[int, float]:
    """Parse a spec rate like ``"75/s"``, ``"750/m"`` or ``"150/d"`` into (count, window seconds)."""
    try:
        count_text, unit = text.strip().split("/")
        count = int(count_text)
        seconds = _UNIT_SECONDS[unit.strip()]
    except (ValueError, KeyError):
        raise ValueError(
            f"rate limit {text!r} is not COUNT/UNIT with UNIT one of s, m, h, d (e.g. '75/s')"
        ) from None
    if count <= 0:
        raise ValueError(f"rate limit {text!r} must allow at least one request")
    return count, seconds


def parse_mode(mode: str) -> float | None:
    """Parse a rate-limit mode: ``off`` -> None (not enforced), ``real`` -> 1.0, ``scale:F`` -> F."""
    text = (mode or "").strip().lower()
    if text == "off":
        return None
    if text == "real":
        return 1.0
    if text.startswith("scale:"):
        try:
            factor = float(text[len("scale:") :])
        except ValueError:
            factor = float("nan")
        if math.isfinite(factor) and factor > 0:
            return factor
    raise ValueError(
        f"rate-limit mode {mode!r} is not one of 'off', 'real' or 'scale:F' with F > 0 "
        "(e.g. 'scale:0.1' makes the 1 s burst window 0.1 s and the 60 s steady window 6 s)"
    )


def _fmt_window(seconds: float) -> str:
    """Format a window length for `w=`: integers bare, fractions without trailing zeros."""
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.6f}".rstrip("0").rstrip(".")


class _Bucket:
    """Counters of one (endpoint, variant): for each window its limit, length, current index and count."""

    __slots__ = ("limits", "lengths", "indexes", "counts", "policy")

    def __init__(self, limits: Sequence[int], lengths: Sequence[float]) -> None:
        self.limits = list(limits)
        self.lengths = list(lengths)
        self.indexes = [-1] * len(limits)
        self.counts = [0] * len(limits)
        self.policy = ", ".join(f"{lim};w={_fmt_window(w)}" for lim, w in zip(limits, lengths, strict=True))


class RateLimiter:
    """Per-endpoint fixed-window rate limits of one Klaviyo account, driven by the spec subset.

    `RateLimiter(mode="off", subset=None)`: `subset` defaults to `klaviyo_dagster.spec.load_subset()`.
    `check(op_key, query, now)` counts the request and returns a `Decision`; `now` is a clock in seconds
    (the sandbox passes `time.time()`, tests a fake clock). Thread-safe.
    """

    def __init__(self, mode: str = "off", subset: Mapping[str, Any] | None = None) -> None:
        if subset is None:
            from klaviyo_dagster.spec import load_subset

            subset = load_subset()
        # op_key -> (base limits, [(param name, value, variant limits), ...]); limits are
        # [(count, real window seconds)] in burst, steady, daily order.
        self._limits: dict[str, tuple[list[tuple[int, float]], list[tuple[str, str, list[tuple[int, float]]]]]] = {}
        for op_key, op in subset.get("operations", {}).items():
            base = self._parse_limits(op_key, op.get("ratelimit") or {})
            if not base:
                continue
            variants = []
            for condition, limits in (op.get("ratelimit_with") or {}).items():
                name, _, value = condition.partition("=")
                # A variant inherits the windows it does not name (e.g. the daily cap).
                merged = {**(op.get("ratelimit") or {}), **limits}
                variants.append((name, value, self._parse_limits(op_key, merged)))
            self._limits[op_key] = (base, variants)
        self._lock = threading.Lock()
        self._mode = "off"
        self._factor: float | None = None
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.header_form = "combined"
        self.l_steady = 750
        self.set_mode(mode)

    def configure(self, *, header_form: str | None = None, l_steady: int | None = None) -> None:
        """Switch the `RateLimit-Limit` form and/or the L tier's steady limit (restarts the windows)."""
        if header_form is not None:
            if header_form not in HEADER_FORMS:
                raise ValueError(f"rate-limit header form {header_form!r} is not one of {', '.join(HEADER_FORMS)}")
            self.header_form = header_form
        if l_steady is not None and int(l_steady) != self.l_steady:
            self.l_steady = int(l_steady)
            self.set_mode(self._mode)

    def _adjust(self, limits: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The L tier's steady limit as configured (750/m from the spec, or the guide's 700/m)."""
        if tuple(limits[:2]) == L_TIER and self.l_steady != 750:
            return [limits[0], (self.l_steady, limits[1][1]), *limits[2:]]
        return limits

    @staticmethod
    def _parse_limits(op_key: str, spec: Mapping[str, str]) -> list[tuple[int, float]]:
        try:
            return [parse_rate(spec[name]) for name in _WINDOW_ORDER if name in spec]
        except ValueError as exc:
            raise ValueError(f"{op_key}: {exc}; fix the ratelimit entry of the spec subset") from None

    @property
    def mode(self) -> str:
        """The current mode string (``off``, ``real`` or ``scale:F``)."""
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch mode (``off`` | ``real`` | ``scale:F``) and start every window afresh."""
        factor = parse_mode(mode)
        with self._lock:
            self._factor = factor
            self._mode = mode.strip().lower()
            scale = 1.0 if factor is None else factor
            self._buckets = {}
            for op_key, (base, variants) in self._limits.items():
                base = self._adjust(base)
                self._buckets[(op_key, "")] = _Bucket([c for c, _ in base], [w * scale for _, w in base])
                for name, value, limits in variants:
                    limits = self._adjust(limits)
                    self._buckets[(op_key, f"{name}={value}")] = _Bucket(
                        [c for c, _ in limits], [w * scale for _, w in limits]
                    )

    def reset(self) -> None:
        """Forget every count (as if every window had just ended)."""
        self.set_mode(self._mode)

    def limits(self, op_key: str, query: Mapping[str, Sequence[str]] | None = None) -> list[tuple[int, float]]:
        """The (count, window seconds) limits that apply to this request under the current mode."""
        bucket = self._buckets.get((op_key, self._variant(op_key, query or {})))
        return [] if bucket is None else list(zip(bucket.limits, bucket.lengths, strict=True))

    def _variant(self, op_key: str, query: Mapping[str, Sequence[str]]) -> str:
        entry = self._limits.get(op_key)
        if entry is None:
            return ""
        for name, value, _ in entry[1]:
            for raw in query.get(name, ()):
                if value in raw.split(","):
                    return f"{name}={value}"
        return ""

    def check(self, op_key: str, query: Mapping[str, Sequence[str]], now: float) -> Decision:
        """Count one request to `op_key` (e.g. ``"GET /api/profiles"``) at time `now` and decide.

        Operations without limits in the subset always pass, without headers.
        """
        bucket = self._buckets.get((op_key, self._variant(op_key, query)))
        if bucket is None:
            return Decision(allowed=True)
        enforce = self._factor is not None
        with self._lock:
            limits, lengths, indexes, counts = bucket.limits, bucket.lengths, bucket.indexes, bucket.counts
            wait = 0.0
            for i in range(len(limits)):
                index = int(now // lengths[i])
                if index != indexes[i]:
                    indexes[i] = index
                    counts[i] = 0
                if counts[i] >= limits[i]:
                    wait = max(wait, (index + 1) * lengths[i] - now)
            if enforce and wait > 0:
                return self._refusal(wait)
            # Allowed: count it everywhere and report the window with the least room left.
            tightest, least = 0, limits[0]
            for i in range(len(limits)):
                counts[i] += 1
                room = limits[i] - counts[i]
                if room < least:
                    least, tightest = room, i
            reset = (indexes[tightest] + 1) * lengths[tightest] - now
        form = self.header_form
        if form == "combined":
            limit_header = f"{limits[tightest]}, {bucket.policy}"
        elif form == "policy":
            limit_header = f"{limits[tightest]};w={_fmt_window(lengths[tightest])}"
        else:
            limit_header = str(limits[tightest])
        return Decision(
            allowed=True,
            headers={
                "RateLimit-Limit": limit_header,
                "RateLimit-Remaining": str(max(0, least)),
                "RateLimit-Reset": str(max(1, math.ceil(reset))),
            },
        )

    @staticmethod
    def _refusal(wait: float) -> Decision:
        seconds = max(1, math.ceil(wait - 1e-9))
        unit = "second" if seconds == 1 else "seconds"
        return Decision(
            allowed=False,
            status=429,
            retry_after=wait,
            headers={"Retry-After": str(seconds), "X-Sandbox-Retry-After-Ms": str(max(1, math.ceil(wait * 1000 - 1e-6)))},
            error={
                "id": str(uuid.uuid4()),
                "status": 429,
                "code": "throttled",
                "title": "Request was throttled.",
                "detail": f"Request was throttled. Expected available in {seconds} {unit}.",
            },
        )
