"""The official `klaviyo-api` SDK (24.x, revision 2026-07-15), unmodified, pages through every read
endpoint the sandbox serves, the way its README shows: `page_cursor=<links.next>` on each next call.

The SDK parses every page into its typed pydantic models, so this fails on a body its models cannot read
or a cursor the sandbox does not take as the SDK sends it: against an https host it cuts the token out of
links.next keeping the `=` (`page[cursor]=%3D<token>`, test_strict.py), against the sandbox's http URL it
sends the whole links.next URL. Each operation is found in the SDK by its spec operationId; every collection
operation of the spec subset that takes `page[cursor]` is covered (new ones are picked up automatically),
and the ids the SDK sees equal those of a raw walk of links.next.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import klaviyo_api  # a test dependency (pyproject [test] extra)
import pytest
import requests

from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.spec import load_subset
from klaviyo_dagster_tests.sandbox.sandbox_http import first_id_of

REVISION = "2026-07-15"
MAX_PAGES = 12
OPERATIONS = {k: op for k, op in load_subset()["operations"].items()
              if k.startswith("GET ") and "page[cursor]" in op["parameters"]}


@pytest.fixture(scope="module")
def world():
    """A private sandbox with a finished bulk import job (so the job collections have members)."""
    with run_sandbox(seed=11, scale="small") as sb:
        s = requests.Session()
        s.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                          "Content-Type": "application/vnd.api+json"})
        rows = [{"type": "profile", "attributes": {"email": f"sdk{k}@example.com"}} for k in range(30)]
        rows += [{"type": "profile", "attributes": {"email": f"not an email {k}"}} for k in range(3)]
        body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": rows}}}}
        r = s.post(sb.base_url + "/api/profile-bulk-import-jobs", json=body)
        if r.status_code == 400:  # the import_invalid_row switch's default answers the whole POST 400
            body["data"]["attributes"]["profiles"]["data"] = rows[:30]
            r = s.post(sb.base_url + "/api/profile-bulk-import-jobs", json=body)
        job = r.json()["data"]["id"]
        for _ in range(200):
            if s.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job}").json()["data"]["attributes"]["status"] == "complete":
                break
            time.sleep(0.05)
        sdk = klaviyo_api.KlaviyoAPI(sb.api_key, max_delay=1, max_retries=1, test_host=sb.base_url)
        yield sb, s, sdk, job


def sdk_method(sdk: Any, operation_id: str) -> Any:
    """The SDK method named like the spec's operationId (its API groups are properties of KlaviyoAPI)."""
    for name in dir(type(sdk)):
        if isinstance(getattr(type(sdk), name), property) and name[0].isupper():
            group = getattr(sdk, name)
            if hasattr(group, operation_id):
                return getattr(group, operation_id)
    raise AssertionError(f"klaviyo-api has no method {operation_id}")


def arguments(world: Any, op_key: str, op: dict) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """(positional args, SDK keyword args, raw query) for one operation: path ids, required filters."""
    sb, s, _, job = world
    template = op_key.split(" ", 1)[1]
    positional = []
    if "{id}" in template:
        kind = template.split("/")[2]
        positional = [job if kind == "profile-bulk-import-jobs" else
                      first_id_of(lambda path, params: s.get(sb.base_url + path, params=params).json(), kind)]
    kwargs: dict[str, Any] = {}
    query: dict[str, str] = {}
    if op_key == "GET /api/campaigns":
        kwargs["filter"] = query["filter"] = "equals(messages.channel,'email')"
    if op_key == "GET /api/events":  # one day of events, not the whole account
        _, last = sb.truth.date_range()
        day = (last - timedelta(days=2)).strftime("%Y-%m-%dT00:00:00Z")
        kwargs["filter"] = query["filter"] = f"greater-or-equal(datetime,{day}),less-than(datetime,{day[:11]}06:00:00Z)"
    size = op["parameters"].get("page[size]")
    if size is not None:  # small pages, so every collection of more than a few records has several
        n = min(5, size["schema"].get("maximum", 5))
        kwargs["page_size"] = n
        query["page[size]"] = str(n)
    return positional, kwargs, query


def raw_ids(world: Any, path: str, query: dict[str, str]) -> list[str]:
    sb, s, _, _ = world
    ids, url, params = [], sb.base_url + path, query
    for _ in range(MAX_PAGES):
        doc = s.get(url, params=params).json()
        ids += [d["id"] for d in doc["data"]]
        url, params = doc["links"].get("next"), None
        if not url:
            break
    return ids


@pytest.mark.parametrize("op_key", sorted(OPERATIONS))
def test_sdk_pages_through_every_read_endpoint(world, op_key):
    op = OPERATIONS[op_key]
    _, _, sdk, _ = world
    method = sdk_method(sdk, op["operationId"])
    positional, kwargs, query = arguments(world, op_key, op)
    ids, cursor, pages = [], None, 0
    for _ in range(MAX_PAGES):
        page = method(*positional, **kwargs, page_cursor=cursor) if cursor else method(*positional, **kwargs)
        pages += 1
        ids += [item.id for item in page.data]
        cursor = page.links.next if page.links else None
        if not cursor:
            break
    path = op_key.split(" ", 1)[1].replace("{id}", positional[0] if positional else "")
    assert ids == raw_ids(world, path, query)
    assert len(ids) == len(set(ids))
    if "page_size" in kwargs and len(ids) > kwargs["page_size"]:  # the SDK really followed links.next
        assert pages > 1, op_key
