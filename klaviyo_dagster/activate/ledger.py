"""Shared pieces of the asynchronous activations (event import, consent, privacy deletion).

These Klaviyo endpoints answer 202 and offer no job to poll (events, subscriptions, deletions), so
their real outcome is read back: :func:`poll_until` polls with capped exponential backoff until a check
says everything is confirmed or the bound runs out; :func:`profiles_matching` reads the profiles that
carry given identifiers (``any(email,[...])``, 100 a request). :func:`append_rows` and
:func:`upsert_rows` write log and state rows in one short transaction; :func:`actor` names who ran the
change (run config, else the run's ``dagster/user`` tag, else the OS user) for the consent and deletion logs.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from klaviyo_dagster.client import filters

FILTER_BATCH = 100  # profile identifier filters take up to 100 values (page[size] max)


@dataclass
class PollResult:
    """Whether the check passed, after how long and how many checks."""

    done: bool
    waited_s: float
    polls: int


def poll_until(
    check: Callable[[], bool],
    *,
    max_wait_s: float,
    first_poll_s: float = 0.3,
    max_poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PollResult:
    """Call ``check`` until it returns True or ``max_wait_s`` passed (backoff doubling up to ``max_poll_s``)."""
    start = clock()
    delay = first_poll_s
    polls = 0
    while True:
        polls += 1
        if check():
            return PollResult(True, clock() - start, polls)
        waited = clock() - start
        if waited >= max_wait_s:
            return PollResult(False, waited, polls)
        sleep(min(delay, max(0.0, max_wait_s - waited)))
        delay = min(delay * 2, max_poll_s)


def any_filter(field: str, values: Sequence[str]) -> str:
    """``any(field,["a","b"])`` with each value quoted as Klaviyo's filter syntax allows."""
    return filters.any_of(field, values)


def profiles_matching(client: Any, field: str, values: Iterable[str], *,
                      subscriptions: bool = False) -> Iterator[dict[str, Any]]:
    """Every profile whose ``field`` (id, email, phone_number) is one of ``values``, 100 values a request."""
    batch: list[str] = []
    params: dict[str, Any] = {"page[size]": FILTER_BATCH}
    if subscriptions:
        params["additional-fields[profile]"] = "subscriptions"
    if field != "id":
        params["fields[profile]"] = ",".join(["email", "phone_number"] + (["subscriptions"] if subscriptions else []))

    def read(values: list[str]) -> Iterator[dict[str, Any]]:
        for page in client.paginate("/api/profiles", {**params, "filter": any_filter(field, values)}):
            yield from page.get("data") or []

    for value in values:
        batch.append(value)
        if len(batch) == FILTER_BATCH:
            yield from read(batch)
            batch = []
    if batch:
        yield from read(batch)


def append_rows(warehouse: Any, table: str, columns: list[str], rows: Sequence[Sequence[Any]]) -> None:
    """Append rows to ``table`` (columns by name) in one short transaction."""
    upsert_rows(warehouse, table, columns, rows, key=())


def upsert_rows(warehouse: Any, table: str, columns: list[str], rows: Sequence[Sequence[Any]],
                key: Sequence[str]) -> None:
    """Replace the rows of ``table`` that share ``key`` with ``rows`` (plain append when ``key`` is empty)."""
    if not rows:
        return
    frame = pd.DataFrame(list(rows), columns=columns, dtype=object)
    for col in columns:
        if col.endswith("_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
    with warehouse.transaction() as con:
        con.register("__ledger_rows", frame)
        if key:
            cond = " AND ".join(f't."{k}" IS NOT DISTINCT FROM r."{k}"' for k in key)
            con.execute(f"DELETE FROM {table} t USING __ledger_rows r WHERE {cond}")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __ledger_rows")
        con.unregister("__ledger_rows")


def actor(configured: str | None, run_tags: dict[str, str] | None = None) -> str:
    """Who made a change: the run config's ``changed_by``, else the run's ``dagster/user`` tag, else the OS user."""
    if configured and configured.strip():
        return configured.strip()
    user = (run_tags or {}).get("dagster/user")
    if user:
        return user
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "unknown"
