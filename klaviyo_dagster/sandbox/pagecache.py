"""A byte-bounded LRU of rendered sandbox answers, keyed by their exact URL.

Generating a page of 1,000 events costs the sandbox ~50 ms of CPU; serving it again from here costs a
dictionary lookup, so benchmarks that read the same pages at Klaviyo's top tier are not bound by the
sandbox. The server decides what may be cached and calls `clear()` whenever data may change; a `put`
made with a generation token taken before such a `clear()` is ignored, so a page rendered from old data
never lands in the cache after the change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class PageCache:
    """Rendered answers (objects with a ``body`` bytes attribute) by key, at most ``max_bytes`` of bodies."""

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.generation = 0
        self.hits = self.misses = self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Any) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Any, value: Any, generation: int | None = None) -> None:
        """Keep ``value`` unless it is larger than the whole cache or data changed since ``generation``."""
        size = len(value.body)
        if size > self.max_bytes:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.body)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            if self._items:
                self._items.clear()
                self._bytes = 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"max_bytes": self.max_bytes, "bytes": self._bytes, "pages": len(self._items),
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "generation": self.generation}
