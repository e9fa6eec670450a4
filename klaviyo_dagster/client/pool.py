"""One bounded pool per client: independent cursor chains read concurrently, pages handed over in a bounded queue.

A *chain* is one paginated read (a pass, or a sub-window of one): a function that yields items (pages) and
may ``spawn`` further chains (a pass that finds its window large splits it into sub-windows). ``run(chains)``
yields the items of all chains in arrival order. At most ``max_workers`` chains of one client run at once
(all runs of the client share the bound), and per endpoint bucket at most its ``AdaptiveLimit`` (grown while
latency holds the endpoint back, halved on 429; fed by the client after every answer through ``observe``).

Memory is bounded whatever the volume: items wait in a queue of ``queue_items`` slots and each running
chain holds at most one item while the queue is full, so at most ``queue_items + max_workers + 1`` items are
alive. An exception in a chain stops the others and is re-raised in the consumer; a consumer that stops
early (``close()``, an error) stops every chain at its next item and closes its iterator.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.client.adaptive import AdaptiveLimit

_DONE = object()
_POLL_S = 0.1


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


Spawn = Callable[["Chain"], None]


@dataclass(frozen=True)
class Chain:
    """One cursor chain: ``key`` is its endpoint bucket; ``run(spawn)`` yields its items."""

    key: str
    run: Callable[[Spawn], Iterable[Any]]
    label: str = ""


class ChainPool:
    """Concurrent chains for one client (see module docstring)."""

    def __init__(self, max_workers: int = 16, queue_items: int = 8, initial: int = 4) -> None:
        if max_workers < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_workers}")
        self.max_workers = int(max_workers)
        self.queue_items = max(1, int(queue_items))
        self.initial = initial
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._limits: dict[str, AdaptiveLimit] = {}
        self._lock = threading.Lock()
        self._backlogged = False
        self.chains_run = 0
        self.peak_running = 0
        self._running_total = 0

    # -- adaptation ----------------------------------------------------------------------------------
    def limit(self, key: str) -> AdaptiveLimit:
        state = self._limits.get(key)
        if state is None:
            with self._lock:
                state = self._limits.setdefault(
                    key, AdaptiveLimit(min(self.initial, self.max_workers), self.max_workers)
                )
        return state

    def observe(self, key: str, waited: float, status: int) -> None:
        """One answer of bucket ``key`` came back after ``waited`` seconds of pacing (called by the client)."""
        self.limit(key).observe(waited, status, self._backlogged)

    def snapshot(self) -> dict[str, Any]:
        """Chains run, peak concurrency, and each bucket's limit state."""
        return {
            "max_concurrency": self.max_workers,
            "chains": self.chains_run,
            "peak_running": self.peak_running,
            "by_endpoint": {k: v.snapshot() for k, v in list(self._limits.items())},
        }

    # -- running -------------------------------------------------------------------------------------
    def run(self, chains: Iterable[Chain]) -> Iterator[Any]:
        """Yield the items of ``chains`` (and of the chains they spawn) as they arrive."""
        tasks: deque[Chain] = deque(chains)
        if not tasks:
            return
        out: queue.Queue[Any] = queue.Queue(maxsize=self.queue_items)
        stop = threading.Event()
        cond = threading.Condition()
        running: dict[str, int] = {}
        active = [len(tasks)]  # chains queued or running

        def spawn(chain: Chain) -> None:
            with cond:
                tasks.append(chain)
                active[0] += 1
                cond.notify_all()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    self._backlogged = True
            return False

        def pick() -> Chain | None:
            """The first queued chain whose bucket is under its limit (called under ``cond``)."""
            for i, chain in enumerate(tasks):
                if running.get(chain.key, 0) < self.limit(chain.key).limit:
                    del tasks[i]
                    running[chain.key] = running.get(chain.key, 0) + 1
                    return chain
            return None

        def worker() -> None:
            while True:
                with cond:
                    chain = None
                    while not stop.is_set() and active[0] > 0:
                        chain = pick()
                        if chain is not None:
                            break
                        cond.wait(_POLL_S)
                    if chain is None:
                        return
                self._slots.acquire()
                with self._lock:
                    self.chains_run += 1
                    self._running_total += 1
                    self.peak_running = max(self.peak_running, self._running_total)
                iterator = None
                try:
                    iterator = iter(chain.run(spawn))
                    for item in iterator:
                        self._backlogged = out.full()
                        if not put(item):
                            break
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                    put(_Failure(exc))
                    stop.set()
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
                    with self._lock:
                        self._running_total -= 1
                    self._slots.release()
                    with cond:
                        running[chain.key] -= 1
                        active[0] -= 1
                        last = active[0] == 0
                        cond.notify_all()
                    if last:
                        put(_DONE)

        threads = [threading.Thread(target=worker, name=f"klaviyo-chain-{i}", daemon=True)
                   for i in range(self.max_workers)]
        for t in threads:
            t.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            with cond:
                cond.notify_all()
            for t in threads:
                t.join(timeout=30)
