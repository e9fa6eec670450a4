"""Recovery after throttling, with an injected clock: after a burst of 429s the pace is back to >= 0.9 of
the tier within two steady windows (in time alone, or at once when the server shows the room is free)."""

from __future__ import annotations

from klaviyo_dagster.client.ratelimit import MIN_SHARE, BucketLimiter, RateLimiter
from klaviyo_dagster.client.tiers import Bucket, Tier
from klaviyo_dagster_tests.client.test_ratelimit_logic import FakeClock

BUCKET = Bucket("GET /api/metrics", Tier.M)  # 10/s burst, 150/min steady


def storm(state: BucketLimiter, clock: FakeClock, episodes: int = 4, in_flight: int = 6) -> None:
    """``episodes`` rounds of 429s (each answering ``in_flight`` requests sent at once, Retry-After 1 s)."""
    for _ in range(episodes):
        for _ in range(in_flight):
            state.throttled(1.0)
        clock.now = state.blocked_until


def sends_after(limiter: RateLimiter, clock: FakeClock, seconds: float) -> list[float]:
    """Send as fast as the limiter allows for ``seconds``; the send times."""
    times, end = [], clock.now + seconds
    while clock.now < end:
        limiter.acquire(BUCKET)
        times.append(clock.now)
    return times


def test_requests_in_flight_during_a_hold_cut_the_pace_once() -> None:
    clock = FakeClock()
    state = BucketLimiter([(10, 1.0), (150, 60.0)], clock=clock)
    for _ in range(8):  # eight concurrent requests all answered 429 in the same hold
        state.throttled(1.0)
    assert state.share == 0.5
    storm(state, clock, episodes=5)
    assert state.share == MIN_SHARE  # repeated episodes: down to the floor, no lower


def test_pace_recovers_in_time_within_two_steady_windows_without_headers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    sends_after(limiter, clock, 60.0)
    storm(limiter.bucket(BUCKET), clock)
    t0 = clock.now
    times = sends_after(limiter, clock, 120.0)
    first = sum(1 for t in times if t < t0 + 60)
    second = sum(1 for t in times if t0 + 60 <= t < t0 + 120)
    assert second >= 0.9 * Tier.M.steady, (first, second)
    assert first >= 0.55 * Tier.M.steady  # linear recovery: already most of the rate in the first window
    assert limiter.bucket(BUCKET).share == 1.0


def test_server_headers_showing_no_other_user_restore_the_full_pace_at_once() -> None:
    clock = FakeClock()
    state = BucketLimiter([(10, 1.0), (150, 60.0)], clock=clock)
    storm(state, clock)
    assert state.share == MIN_SHARE
    clock.now = state.reserve()
    # The server counts one request in this window: ours. Whoever spent the account has stopped.
    state.observe({"RateLimit-Limit": "10, 10;w=1, 150;w=60", "RateLimit-Remaining": "9", "RateLimit-Reset": "1"})
    assert state.share == 1.0
    full = state.interval
    gaps = []
    for _ in range(5):
        t = state.reserve()
        gaps.append(t - clock.now)
        clock.now = t
    assert max(gaps) <= full  # bursts allowed again: no slowed interval


def test_server_headers_showing_another_user_keep_the_slow_pace_and_its_budget() -> None:
    clock = FakeClock()
    state = BucketLimiter([(10, 1.0), (150, 60.0)], clock=clock)
    storm(state, clock)
    clock.now = state.reserve()
    # The server saw 140 of 150 in the steady window, this client 1 of them: others are still at it.
    state.observe({"RateLimit-Limit": "150, 10;w=1, 150;w=60", "RateLimit-Remaining": "10", "RateLimit-Reset": "30"})
    assert state.share < 1.0
    seen_at, sent = clock.now, []
    for _ in range(11):
        clock.now = state.reserve()
        sent.append(clock.now)
    assert sent[-2] < seen_at + 29 <= sent[-1]  # the 11th waits for the server's window to reset
