"""prefetch: order kept, read-ahead bounded, producer errors re-raised, early close stops the producer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from klaviyo_dagster.ingest.prefetch import prefetch


def test_items_arrive_in_order_and_read_ahead_is_bounded() -> None:
    produced: list[int] = []
    gate = threading.Event()

    def source() -> Iterator[int]:
        for i in range(10):
            produced.append(i)
            yield i

    stream = prefetch(source(), depth=2)
    assert next(stream) == 0
    # The producer may run ahead only by the queue's slots plus the item it holds: at most 1 + 2 + 1.
    gate.wait(0.3)
    assert len(produced) <= 4
    assert list(stream) == list(range(1, 10))


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("page 3 failed")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="page 3 failed"):
        for item in prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer_and_closes_its_iterator() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetch(source(), depth=1)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5), "the producer's iterator was not closed"
    assert not any(t.name == "klaviyo-prefetch" and t.is_alive() for t in threading.enumerate())


def test_depth_zero_reads_inline() -> None:
    assert list(prefetch(iter([1, 2, 3]), depth=0)) == [1, 2, 3]
