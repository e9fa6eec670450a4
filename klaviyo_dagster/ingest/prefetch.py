"""Read ahead: run an iterator in a background thread, a bounded number of items ahead of its consumer.

Ingest fetches pages from Klaviyo and flattens and stages them; done in turn, the server idles while we
flatten and we idle while it builds the next page. `prefetch(pages, depth=1)` overlaps the two: one thread
drives the whole page stream (so the client is still used from one thread only) and hands pages over through
a queue of `depth` slots, so at most `depth + 2` pages are in memory. An exception in the producer is
re-raised in the consumer; a consumer that stops early (an error, a `break`, `close()`) stops the producer and
closes its iterator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 1, name: str = "klaviyo-prefetch") -> Iterator[T]:
    """Yield ``items`` in order while a daemon thread produces up to ``depth`` items ahead."""
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and stop.is_set():
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=30)
