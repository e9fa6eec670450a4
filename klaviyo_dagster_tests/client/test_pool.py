"""The client's chain pool and adaptive limits: growth, hold, halving on 429, bounds, memory, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from klaviyo_dagster.client.adaptive import AdaptiveLimit
from klaviyo_dagster.client.pool import Chain, ChainPool


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# --- adaptive limit ---------------------------------------------------------------------------------


def test_grows_while_latency_holds_back_and_holds_when_paced() -> None:
    lim = AdaptiveLimit(initial=2, maximum=6)
    assert [lim.observe(0.0, 200) for _ in range(6)] == [3, 4, 5, 6, 6, 6]  # capped at maximum
    lim = AdaptiveLimit(initial=2, maximum=6)
    assert lim.observe(0.25, 200) == 2  # the rate limiter made it wait: pacing binds, no growth
    assert lim.observe(0.0, 200, backlog_full=True) == 2  # the consumer is behind: no growth
    assert lim.snapshot()["held"] == 2


def test_halves_on_429_once_per_cooldown_and_never_below_minimum() -> None:
    clock = Clock()
    lim = AdaptiveLimit(initial=16, maximum=16, cooldown=1.0, clock=clock)
    assert lim.observe(0.0, 429) == 8
    assert lim.observe(0.0, 429) == 8  # same burst of 429s: one signal
    clock.t = 1.5
    assert lim.observe(0.0, 429) == 4
    for step in range(10):
        clock.t = 3.0 + 2 * step
        lim.observe(0.0, 429)
    assert lim.limit == 1 and lim.snapshot()["cuts"] == 4  # 16 -> 8 -> 4 -> 2 -> 1
    assert lim.observe(0.0, 0) == 1  # a broken connection says nothing
    assert lim.observe(0.0, 200) == 2  # and it grows again
    with pytest.raises(ValueError):
        AdaptiveLimit(minimum=0)


def test_pool_feeds_the_limit_of_the_bucket() -> None:
    pool = ChainPool(max_workers=4, initial=2)
    pool.observe("events", 0.0, 200)
    pool.observe("events", 0.0, 200)
    pool.observe("profiles", 0.0, 429)
    snap = pool.snapshot()["by_endpoint"]
    assert snap["events"]["limit"] == 4 and snap["profiles"]["limit"] == 1 and snap["profiles"]["cuts"] == 1


# --- running chains ---------------------------------------------------------------------------------


def numbers(lo: int, hi: int) -> Chain:
    return Chain("k", lambda spawn: iter(range(lo, hi)))


def test_every_item_of_every_chain_and_spawned_chain_arrives_once() -> None:
    def parent(spawn):  # noqa: ANN001, ANN202
        for i in range(5):
            spawn(numbers(1000 + 10 * i, 1010 + 10 * i))
        yield -1

    pool = ChainPool(max_workers=4)
    got = list(pool.run([numbers(0, 100), numbers(100, 200), Chain("k", parent)]))
    assert sorted(got) == [-1, *range(200), *range(1000, 1050)]
    assert pool.snapshot()["chains"] == 8
    assert list(pool.run([])) == []


def test_concurrency_per_bucket_stays_within_its_limit() -> None:
    pool = ChainPool(max_workers=8, initial=3)
    running, peak, lock = [0], [0], threading.Lock()

    def slow(spawn):  # noqa: ANN001, ANN202
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        yield 1

    assert sum(pool.run([Chain("b", slow) for _ in range(12)])) == 12
    assert peak[0] <= 3  # nobody grew the limit (no answers observed)


def test_memory_is_bounded_however_many_items() -> None:
    """At most queue_items + running chains + 1 items exist between producers and a slow consumer."""
    produced, consumed, alive_peak, lock = [0], [0], [0], threading.Lock()

    def chain(spawn):  # noqa: ANN001, ANN202
        for i in range(300):
            with lock:
                produced[0] += 1
                alive_peak[0] = max(alive_peak[0], produced[0] - consumed[0])
            yield i

    pool = ChainPool(max_workers=4, queue_items=3, initial=4)
    for _ in pool.run([Chain("k", chain) for _ in range(6)]):
        time.sleep(0.0005)
        with lock:
            consumed[0] += 1
    assert consumed[0] == 1800
    assert alive_peak[0] <= 3 + 4 + 1


def test_a_failing_chain_stops_the_others_and_raises_in_the_consumer() -> None:
    closed = threading.Event()

    def endless(spawn):  # noqa: ANN001, ANN202
        try:
            while True:
                yield 0
        finally:
            closed.set()

    def broken(spawn):  # noqa: ANN001, ANN202
        yield 1
        raise RuntimeError("page 2 failed")

    pool = ChainPool(max_workers=3)
    with pytest.raises(RuntimeError, match="page 2 failed"):
        for _ in pool.run([Chain("k", endless), Chain("k", broken)]):
            pass
    assert closed.wait(5)


def test_closing_early_stops_every_chain() -> None:
    closed: list[int] = []

    def endless(n: int) -> Chain:
        def run(spawn) -> Iterator[int]:  # noqa: ANN001
            try:
                while True:
                    yield n
            finally:
                closed.append(n)

        return Chain("k", run)

    pool = ChainPool(max_workers=3, initial=3)
    items = pool.run([endless(i) for i in range(3)])
    assert next(items) in (0, 1, 2)
    items.close()
    assert sorted(closed) == [0, 1, 2]
    assert pool.snapshot()["peak_running"] <= 3
