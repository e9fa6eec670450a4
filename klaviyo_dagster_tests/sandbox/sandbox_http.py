"""Small HTTP helpers for the sandbox rate-limit, fault and fidelity tests (raw `requests`, no client code)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

REVISION = "2026-07-15"


def run_sandbox_or_skip() -> Callable[..., Any]:
    """`klaviyo_dagster.sandbox.run_sandbox`, or skip while the server is not there."""
    sandbox = pytest.importorskip("klaviyo_dagster.sandbox")
    if not hasattr(sandbox, "run_sandbox"):
        pytest.skip("klaviyo_dagster.sandbox.run_sandbox is not available yet")
    return sandbox.run_sandbox


@contextmanager
def sandbox(**kwargs: Any) -> Iterator[Any]:
    """Start a private sandbox (`run_sandbox(**kwargs)`) for one test."""
    with run_sandbox_or_skip()(**kwargs) as handle:
        yield handle


def auth(handle: Any) -> dict[str, str]:
    return {"Authorization": f"Klaviyo-API-Key {handle.api_key}", "revision": REVISION}


def call(
    handle: Any,
    method: str,
    path: str,
    params: Any = None,
    json_body: Any = None,
    session: requests.Session | None = None,
    timeout: float = 30,
) -> requests.Response:
    """One API request to the sandbox with a valid key and revision."""
    headers = auth(handle)
    data = None
    if json_body is not None:
        import orjson

        data = orjson.dumps(json_body)
        headers["Content-Type"] = "application/vnd.api+json"
    return (session or requests).request(
        method, handle.base_url + path, params=params, data=data, headers=headers, timeout=timeout
    )


def first_id_of(fetch: Callable[[str, dict[str, str] | None], dict[str, Any]], kind: str) -> str:
    """The id of a first resource of ``kind`` (the path segment, e.g. ``flows``), with ``fetch(path, params)``
    returning a JSON document. Kinds without a collection of their own are found through their parent:
    campaign messages via campaigns, flow actions (one that sends a message) via flows, flow messages via
    that action."""
    if kind == "campaign-messages":
        return fetch("/api/campaigns", {"filter": "equals(messages.channel,'email')",
                                        "include": "campaign-messages"})["included"][0]["id"]
    if kind in ("flow-actions", "flow-messages"):
        actions = fetch("/api/flows", {"include": "flow-actions"})["included"]
        action = next(a["id"] for a in actions if a["attributes"]["definition"]["type"] == "send-email")
        if kind == "flow-actions":
            return action
        return fetch(f"/api/flow-actions/{action}/flow-messages", None)["data"][0]["id"]
    params = {"filter": "equals(messages.channel,'email')"} if kind == "campaigns" else None
    return fetch(f"/api/{kind}", params)["data"][0]["id"]

