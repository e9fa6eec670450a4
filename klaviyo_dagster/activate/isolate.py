"""Send a batch of rows so that bad rows never block good ones: pointer matching, then bounded bisection.

:func:`send_isolating` calls ``send(items)``. When Klaviyo answers 400:
- errors whose ``source.pointer`` names rows (``row_pointer`` matches, e.g.
  ``/data/attributes/profiles/data/N/...`` for a bulk import, ``/data/N/...`` for a list relationship call)
  mark exactly those rows rejected with Klaviyo's reason, and the rest are sent again at once;
- a 400 naming no row (no pointer, or one at the whole array such as ``/data``) splits the batch in halves
  and sends each, down to single rows: a batch of n with b bad rows costs at most about 2*b*log2(n) extra
  calls;
- a 400 pointing anywhere else (e.g. ``/data/relationships/lists``) is not about rows: it is raised.
Any other error is raised too. Generic over the row type, so every activation asset shares it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from klaviyo_dagster.client import KlaviyoBadRequestError

T = TypeVar("T")

IMPORT_ROW_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")
RELATIONSHIP_ROW_POINTER = re.compile(r"^/data/(\d+)(?:/|$)")
# Pointers at the whole collection: they say "something in here", so the batch is bisected.
COLLECTION_POINTERS = ("", "/", "/data", "/data/attributes", "/data/attributes/profiles",
                       "/data/attributes/profiles/data")


@dataclass
class Isolation(Generic[T]):
    """What happened to one batch: the calls that were accepted, the rows refused and why, call counts."""

    accepted: list[tuple[list[T], Any]] = field(default_factory=list)  # (rows, Klaviyo's answer) per call
    rejected: list[tuple[T, str]] = field(default_factory=list)
    calls: int = 0
    bisections: int = 0

    @property
    def extra_calls(self) -> int:
        """Calls beyond the first."""
        return max(0, self.calls - 1)


def error_reason(err: Mapping[str, Any]) -> str:
    """A one-line reason from a JSON:API error object (400 or import error)."""
    parts = [str(err.get(k)) for k in ("code", "title", "detail") if err.get(k)]
    source = err.get("source")
    pointer = source.get("pointer") if isinstance(source, Mapping) else None
    if pointer:
        parts.append(f"at {pointer}")
    return ": ".join(parts) or "failed without a reason from Klaviyo"


def _row_errors(exc: KlaviyoBadRequestError, n: int, row_pointer: re.Pattern[str]) -> tuple[dict[int, str], bool]:
    """({row index: reason} named by the 400, whether some pointer aims at something other than rows)."""
    errors = getattr(exc, "errors", None) or [{"code": exc.code, "detail": exc.detail}]
    rows: dict[int, str] = {}
    elsewhere = False
    for err in errors:
        source = err.get("source") if isinstance(err.get("source"), Mapping) else {}
        pointer = str(source.get("pointer") or "")
        if source.get("parameter"):
            elsewhere = True
            continue
        match = row_pointer.match(pointer)
        if match and int(match.group(1)) < n:
            rows.setdefault(int(match.group(1)), f"Klaviyo refused the row: {error_reason(err)}")
        elif pointer.rstrip("/") not in COLLECTION_POINTERS:
            elsewhere = True
    return rows, elsewhere


def send_isolating(send: Callable[[list[T]], Any], items: Sequence[T],
                   row_pointer: re.Pattern[str] = IMPORT_ROW_POINTER) -> Isolation[T]:
    """Send ``items`` with ``send``; rows Klaviyo refuses are isolated (see the module docstring)."""
    out: Isolation[T] = Isolation()
    stack: list[list[T]] = [list(items)] if items else []
    while stack:
        part = stack.pop()
        out.calls += 1
        try:
            answer = send(part)
        except KlaviyoBadRequestError as exc:
            named, elsewhere = _row_errors(exc, len(part), row_pointer)
            if named:
                out.rejected += [(part[k], reason) for k, reason in sorted(named.items())]
                rest = [item for k, item in enumerate(part) if k not in named]
                if rest:
                    stack.append(rest)
                continue
            if elsewhere:
                raise
            if len(part) == 1:
                out.rejected.append((part[0], f"Klaviyo refused the row: {error_reason(_first(exc))}"))
                continue
            out.bisections += 1
            mid = len(part) // 2
            stack += [part[mid:], part[:mid]]  # first half is sent first
            continue
        out.accepted.append((part, answer))
    return out


def _first(exc: KlaviyoBadRequestError) -> Mapping[str, Any]:
    errors = getattr(exc, "errors", None)
    return errors[0] if errors else {"code": exc.code, "detail": exc.detail}
