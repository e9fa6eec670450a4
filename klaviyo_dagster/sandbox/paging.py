"""Ordered walks and opaque cursors for the sandbox's collections.

Big collections are a lazily generated base (record i has a key k(i), non-decreasing in i) merged with a
small sorted overlay of written records. A position is (key_ms, src, n): src 0 = base index n, src 1 =
overlay sequence n; positions are totally ordered, so a cursor is just the position of the last (or
first) record of a page and the next page is a binary search away, whatever was written in between.
Small collections page by offset. Cursors are base64url JSON, opaque to clients.
"""

from __future__ import annotations

import base64
import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

Pos = tuple[int, int, int]


class CursorError(ValueError):
    """A page[cursor] the sandbox did not issue."""


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
        return data
    except (ValueError, orjson.JSONDecodeError):
        raise CursorError(f"page[cursor] {text[:40]!r} is not a cursor this server issued; "
                          "follow links.next/links.prev as returned") from None


@dataclass
class Overlay:
    """A sorted list of (key_ms, 1, seq, ref) entries with removal by ref."""

    items: list[tuple[int, int, int, Any]] = field(default_factory=list)
    where: dict[Any, tuple[int, int, int, Any]] = field(default_factory=dict)
    seq: int = 0

    def put(self, ref: Any, key_ms: int) -> None:
        self.remove(ref)
        self.seq += 1
        entry = (key_ms, 1, self.seq, ref)
        bisect.insort(self.items, entry)
        self.where[ref] = entry

    def remove(self, ref: Any) -> None:
        old = self.where.pop(ref, None)
        if old is not None:
            i = bisect.bisect_left(self.items, old)
            if i < len(self.items) and self.items[i] == old:
                self.items.pop(i)

    def __contains__(self, ref: Any) -> bool:
        return ref in self.where

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class OrderedSource:
    """A base sequence (key function, size, skip predicate) merged with an overlay."""

    key: Callable[[int], int]
    n: int
    skip: Callable[[int], bool] | None
    overlay: Overlay
    first_at_or_after: Callable[[int], int]

    def walk(self, after: Pos | None, before: Pos | None, descending: bool,
             lo: int | None, hi: int | None) -> Iterator[tuple[Pos, tuple[str, Any]]]:
        """Yield (position, ("b", index) | ("o", ref)) in order, strictly after/before the given positions,
        keys within [lo, hi]. `after`/`before` are in the walking direction's sense."""
        if descending:
            yield from self._walk_desc(after, lo, hi)
        else:
            yield from self._walk_asc(after, lo, hi)

    def _walk_asc(self, after: Pos | None, lo: int | None, hi: int | None) -> Iterator[tuple[Pos, tuple[str, Any]]]:
        i = 0 if lo is None else self.first_at_or_after(lo)
        ov = self.overlay.items
        j = 0 if lo is None else bisect.bisect_left(ov, (lo,))
        if after is not None:
            ak, asrc, an = after
            i = max(i, an + 1 if asrc == 0 else self.first_at_or_after(ak + 1))
            j = max(j, bisect.bisect_right(ov, after, key=lambda t: t[:3]))
        key, skip, n = self.key, self.skip, self.n
        bk = key(i) if i < n else None
        while True:
            oe = ov[j] if j < len(ov) else None
            if bk is None and oe is None:
                return
            if oe is None or (bk is not None and bk <= oe[0]):
                if hi is not None and bk > hi:
                    return
                if skip is None or not skip(i):
                    yield (bk, 0, i), ("b", i)
                i += 1
                bk = key(i) if i < n else None
            else:
                if hi is not None and oe[0] > hi:
                    return
                yield oe[:3], ("o", oe[3])
                j += 1

    def _walk_desc(self, after: Pos | None, lo: int | None, hi: int | None) -> Iterator[tuple[Pos, tuple[str, Any]]]:
        i = self.n - 1 if hi is None else self.first_at_or_after(hi + 1) - 1
        ov = self.overlay.items
        j = len(ov) - 1 if hi is None else bisect.bisect_right(ov, (hi, 2)) - 1
        if after is not None:
            ak, asrc, an = after
            i = min(i, an - 1 if asrc == 0 else self.first_at_or_after(ak + 1) - 1)
            j = min(j, bisect.bisect_left(ov, after, key=lambda t: t[:3]) - 1)
        key, skip = self.key, self.skip
        bk = key(i) if i >= 0 else None
        while True:
            oe = ov[j] if j >= 0 else None
            if bk is None and oe is None:
                return
            if oe is None or (bk is not None and bk > oe[0]):
                if lo is not None and bk < lo:
                    return
                if skip is None or not skip(i):
                    yield (bk, 0, i), ("b", i)
                i -= 1
                bk = key(i) if i >= 0 else None
            else:
                if lo is not None and oe[0] < lo:
                    return
                yield oe[:3], ("o", oe[3])
                j -= 1


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None
    prev_cursor: str | None


def keyset_page(source: OrderedSource, cursor: dict[str, Any] | None, size: int, descending: bool,
                lo: int | None, hi: int | None, accept: Callable[[tuple[str, Any]], Any | None],
                view: str = "") -> Page:
    """One page of a keyset walk. `accept(ref)` returns the record to emit or None to skip it.
    `view` names the ordering; a cursor issued for another ordering is refused."""
    direction = "a"
    start: Pos | None = None
    if cursor is not None:
        if cursor.get("v", "") != view:
            raise CursorError("page[cursor] was issued for a different sort or filter; "
                              "follow links.next as returned, with the same query")
        try:
            direction = cursor["d"]
            start = tuple(int(x) for x in cursor["p"])  # type: ignore[assignment]
            if direction not in ("a", "b") or len(start) != 3:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CursorError("page[cursor] is not a cursor this server issued; follow links.next as returned") from None
    walk_desc = descending if direction == "a" else not descending
    got: list[tuple[Pos, Any]] = []
    more = False
    for pos, ref in source.walk(start, None, walk_desc, lo, hi):
        rec = accept(ref)
        if rec is None:
            continue
        if len(got) == size:
            more = True
            break
        got.append((pos, rec))
    if direction == "b":
        got.reverse()
    items = [r for _, r in got]
    nxt = prv = None
    if got:
        if direction == "a":
            if more:
                nxt = encode_cursor({"v": view, "d": "a", "p": list(got[-1][0])})
            if start is not None:
                prv = encode_cursor({"v": view, "d": "b", "p": list(got[0][0])})
        else:
            nxt = encode_cursor({"v": view, "d": "a", "p": list(got[-1][0])})
            if more:
                prv = encode_cursor({"v": view, "d": "b", "p": list(got[0][0])})
    return Page(items, nxt, prv)


def offset_page(items: list[Any], cursor: dict[str, Any] | None, size: int) -> Page:
    """One page of an in-memory list, by offset."""
    offset = 0
    if cursor is not None:
        try:
            offset = int(cursor["o"])
            if offset < 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CursorError("page[cursor] is not a cursor this server issued; follow links.next as returned") from None
    chunk = items[offset: offset + size]
    nxt = encode_cursor({"o": offset + size}) if offset + size < len(items) else None
    prv = encode_cursor({"o": max(0, offset - size)}) if offset > 0 else None
    return Page(chunk, nxt, prv)
