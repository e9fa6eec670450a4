"""Limiter arithmetic with an injected clock: pacing, burst, sliding windows, header adaptation."""

from __future__ import annotations

import pytest

from klaviyo_dagster.client.ratelimit import (
    WINDOW_MARGIN,
    BucketLimiter,
    RateLimiter,
    WaitTooLong,
    parse_limit_header,
)
from klaviyo_dagster.client.tiers import Bucket, Tier


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _fixed_window_max(times: list[float], window: float) -> int:
    """The most sends any fixed window [k*w, (k+1)*w) saw, for every phase of the window grid."""
    worst = 0
    for phase in [i * window / 7 for i in range(7)]:
        counts: dict[int, int] = {}
        for t in times:
            k = int((t - phase) // window)
            counts[k] = counts.get(k, 0) + 1
        worst = max(worst, max(counts.values()))
    return worst


def _run(bucket: Bucket, n: int, scale: float = 1.0) -> tuple[list[float], FakeClock]:
    clock = FakeClock()
    limiter = RateLimiter(scale, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(n):
        limiter.acquire(bucket)
        times.append(clock.now)
    return times, clock


def test_parse_limit_header() -> None:
    assert parse_limit_header("10, 10;w=1, 150;w=60") == (10, [(10, 1.0), (150, 60.0)])
    assert parse_limit_header("750, 75;w=0.05, 750;w=3") == (750, [(75, 0.05), (750, 3.0)])
    assert parse_limit_header("garbage, 5;w=x") == (None, [])
    assert parse_limit_header(None) == (None, [])


def test_never_exceeds_any_fixed_window_and_uses_nearly_all() -> None:
    for tier in (Tier.S, Tier.M, Tier.L):
        bucket = Bucket(f"GET /x{tier.name}", tier)
        n = tier.steady * 4
        times, _ = _run(bucket, n, scale=0.05)
        assert _fixed_window_max(times, 0.05) <= tier.burst
        assert _fixed_window_max(times, 3.0) <= tier.steady
        # Throughput over the run: at least 95 % of the steady rate.
        span = times[-1] - times[0]
        rate = (n - 1) / span
        assert rate >= 0.95 * tier.steady / 3.0, (tier, rate)
        assert rate <= tier.steady / 3.0 * 1.01 + tier.steady / span  # not faster than allowed


def test_short_run_goes_at_burst_speed_then_paces() -> None:
    times, _ = _run(Bucket("GET /api/profiles", Tier.L), 300)
    # A quarter of the steady budget (187) goes at burst speed: 75 a second.
    assert times[186] - times[0] < 3.0
    # After that the pace is the steady one: 60 s / 750 plus the margin, evenly.
    gaps = [b - a for a, b in zip(times[230:299], times[231:300], strict=True)]
    assert min(gaps) >= 0.08 * (1 + WINDOW_MARGIN) - 1e-9
    assert max(gaps) <= 0.08 * (1 + WINDOW_MARGIN) + 0.001


def test_daily_cap_window() -> None:
    bucket = Bucket("POST /api/lists", Tier.M, daily=150)
    times, _ = _run(bucket, 151)
    assert times[150] - times[0] >= 86_400  # the 151st waits a day


def test_retry_after_blocks_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    bucket = Bucket("GET /api/flows", Tier.S)
    limiter.acquire(bucket)
    limiter.bucket(bucket).throttled(7.5)
    start = clock.now
    waited = limiter.acquire(bucket)
    assert clock.now - start == waited >= 7.5


def test_pacing_off_only_waits_out_429() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    bucket = Bucket("GET /api/flows", Tier.S)
    for _ in range(100):
        assert limiter.acquire(bucket) == 0.0
    limiter.bucket(bucket).throttled(2.0)
    assert limiter.acquire(bucket) == 2.0


def test_headers_replace_table_limits() -> None:
    clock = FakeClock()
    state = BucketLimiter([(75, 1.0), (750, 60.0)], clock=clock)
    changed = state.observe({"RateLimit-Limit": "10, 10;w=1, 150;w=60", "RateLimit-Remaining": "9"})
    assert changed == [(10, 1.0), (150, 60.0)]
    assert state.limits() == [(10, 1.0), (150, 60.0)]
    # Same header again: nothing to change.
    assert state.observe({"RateLimit-Limit": "10, 10;w=1, 150;w=60", "RateLimit-Remaining": "8"}) is None


def test_remaining_below_own_use_means_shared_account() -> None:
    clock = FakeClock()
    state = BucketLimiter([(75, 1.0), (750, 60.0)], clock=clock)
    t = state.reserve()
    assert t == clock.now
    # The server saw 749 of 750 in the steady window; this client sent 1: 1 left until the reset in 20 s.
    state.observe({"RateLimit-Limit": "750, 75;w=1, 750;w=60", "RateLimit-Remaining": "1", "RateLimit-Reset": "20"})
    assert state.reserve() <= clock.now + 0.1
    assert state.reserve() >= clock.now + 20


def test_remaining_zero_from_own_use_adds_no_wait() -> None:
    clock = FakeClock()
    state = BucketLimiter([(3, 0.05), (60, 3.0)], clock=clock)
    for _ in range(3):
        clock.now = state.reserve()
    # The burst window is spent by this client alone: Reset "1" (whole seconds) must not stall 1 s.
    state.observe({"RateLimit-Limit": "3, 3;w=0.05, 60;w=3", "RateLimit-Remaining": "0", "RateLimit-Reset": "1"})
    assert state.reserve() - clock.now < 0.1


def test_429_halves_the_pace_once_per_burst_window_and_recovers() -> None:
    clock = FakeClock()
    state = BucketLimiter([(3, 1.0), (60, 60.0)], clock=clock)
    full = state.interval
    state.throttled(0.5)
    state.throttled(0.5)  # the same episode: one cut only
    assert state.share == 0.5 and state.interval == 2 * full
    clock.now += 2.0
    state.throttled(0.5)
    assert state.share == 0.25
    # Recovery is in time, whether or not requests go out: about two steady windows at most.
    clock.now += 130.0
    state.reserve()
    assert state.share == 1.0 and state.interval == full


def test_a_wait_beyond_patience_is_refused_without_reserving() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    bucket = Bucket("POST /api/lists", Tier.M, daily=150)
    for _ in range(150):
        limiter.acquire(bucket, max_wait=60)
    before = clock.now
    with pytest.raises(WaitTooLong) as info:
        limiter.acquire(bucket, max_wait=60)
    assert info.value.wait > 80_000 and clock.now == before
    assert len(limiter.bucket(bucket)._logs[0]) == 10  # nothing reserved by the refused call
