"""Klaviyo lists for membership sync: find-or-create by name (idempotently) and snapshot the members.

Names are not unique in Klaviyo, so :func:`resolve_list` prefers a list this package created in the same
account (recorded in ``list_registry`` under the account's key prefix), then a single exact-name match, and creates a list only when none exists; a
failed create is followed by a fresh lookup before anything else, so a retry never makes a second list.
:func:`snapshot_members` copies a list's members (id + identifiers) into the warehouse page by page.
"""

from collections.abc import Iterator
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from klaviyo_dagster.activate import state
from klaviyo_dagster.client import (
    KlaviyoConnectionError,
    KlaviyoServerError,
    KlaviyoUnknownOutcomeError,
    filters,
)
from klaviyo_dagster.warehouse.list_sync import (
    DEFAULT_ACCOUNT,
    append_members,
    clear_members,
    register_list,
    registered_lists,
)

CREATE_ATTEMPTS = 4

MEMBER_PAGE_SIZE = 100


def find_lists_by_name(client: Any, name: str) -> list[str]:
    """Ids of the lists whose name is exactly ``name`` (Klaviyo names are not unique)."""
    # Klaviyo's lists take `name` only in the list form: equals(name,["x"]).
    params = {"filter": filters.equals_any("name", [name]), "fields[list]": "name"}
    ids = []
    for page in client.paginate("/api/lists", params):
        for item in page.get("data") or []:
            if (item.get("attributes") or {}).get("name", name) == name:
                ids.append(str(item["id"]))
    return ids


def create_list_once(client: Any, name: str, attempts: int = CREATE_ATTEMPTS) -> str:
    """Create a list named ``name``, repeating a failed create only after looking the name up again.

    The client does not repeat ``POST /api/lists`` itself (a create that landed before a 5xx or a broken
    connection would be made twice), so find-or-create lives here: before every repeat the name is looked up,
    and a list that appeared is used instead of creating another.
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=max(0.2, float(getattr(client, "max_backoff", 10.0)))),
        retry=retry_if_exception_type((KlaviyoUnknownOutcomeError, KlaviyoServerError, KlaviyoConnectionError)),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                found = find_lists_by_name(client, name)
                if len(found) == 1:
                    return found[0]
                if found:
                    raise ValueError(f"{len(found)} Klaviyo lists are named {name!r} after a failed create "
                                     f"({', '.join(found[:5])}); put the intended id in the list_id column")
            doc = client.post("/api/lists", {"data": {"type": "list", "attributes": {"name": name}}})
            return str(doc["data"]["id"])
    raise AssertionError("unreachable: Retrying re-raises the last error")


def resolve_list(client: Any, warehouse: Any, list_id: str | None, list_name: str | None,
                 *, dry_run: bool, run_id: str, log: Any, account: str = DEFAULT_ACCOUNT) -> tuple[str | None, bool]:
    """(list id, created?) for a target; None as id only in dry run when the list would be created.
    ``account`` (the key prefix) keys the registry: only lists this package created in that account count."""
    if list_id:
        client.get(f"/api/lists/{list_id}")  # a clear KlaviyoNotFoundError when it does not exist
        return list_id, False
    if not list_name:
        raise ValueError("an audience row names no list: fill list_id or list_name")
    ours = registered_lists(warehouse, account, list_name)
    found = find_lists_by_name(client, list_name)
    for candidate in ours:
        if candidate in found:
            return candidate, False
    if len(found) == 1:
        return found[0], False
    if len(found) > 1:
        raise ValueError(
            f"{len(found)} Klaviyo lists are named {list_name!r} ({', '.join(found[:5])}); "
            "put the intended list id in the audience table's list_id column"
        )
    if dry_run:
        return None, True
    new_id = create_list_once(client, list_name)
    register_list(warehouse, account, list_name, new_id, state.now_utc().to_pydatetime(), run_id)
    log.info(f"created Klaviyo list {list_name!r}: {new_id}")
    return new_id, True


def _member_rows(client: Any, list_id: str, run_id: str) -> Iterator[tuple]:
    params = {"page[size]": MEMBER_PAGE_SIZE, "fields[profile]": "email,phone_number,external_id"}
    for page in client.paginate(f"/api/lists/{list_id}/profiles", params):
        for item in page.get("data") or []:
            a = item.get("attributes") or {}
            yield (run_id, list_id, str(item["id"]), a.get("email"), a.get("phone_number"), a.get("external_id"))


def snapshot_members(client: Any, warehouse: Any, list_id: str, run_id: str, chunk: int = 10_000) -> int:
    """Copy the list's current members into ``list_members_snapshot`` chunk by chunk; returns the count."""
    clear_members(warehouse, list_id)
    total, rows = 0, []
    members = _member_rows(client, list_id, run_id)
    while True:
        rows = [r for _, r in zip(range(chunk), members, strict=False)]
        if not rows:
            return total
        total += len(rows)
        append_members(warehouse, rows)
