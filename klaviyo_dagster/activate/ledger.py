"""Shared pieces of the asynchronous activations (event import, consent, privacy deletion).

These Klaviyo endpoints answer 202 and offer no job to poll (events, subscriptions, deletions), so
their real outcome is read back: :func:`poll_until` polls with capped exponential backoff until a check
says everything is confirmed or the bound runs out; :func:`profiles_matching` reads the profiles that
carry given identifiers (``any(email,[...])``, 100 a request). :func:`append_rows` and
:func:`upsert_rows` (from warehouse/activation_state.py, where the SQL is) write log and state rows in one
short transaction; :func:`actor` names who ran the
change (run config, else the run's ``dagster/user`` tag, else the OS user) for the consent and deletion logs.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.client import filters
from klaviyo_dagster.warehouse.activation_state import append_rows, upsert_rows

__all__ = ["FILTER_BATCH", "PollResult", "actor", "any_filter", "append_rows", "poll_until", "profiles_matching",
           "upsert_rows"]

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
