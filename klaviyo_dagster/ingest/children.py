"""Child objects: pages of an entry read through its parent entry's passes (``KlaviyoObject.parent``).

The parent's passes (its path, fan-out and, for incremental children, the window on the parent's cursor)
are read with ``include=<relationship>`` and a small sparse fieldset. Then, per ``Parent.via``:

- ``include``: the rows are the resources of the included relationship (campaign messages on
  ``/api/campaigns``, flow actions on ``/api/flows``): no request beyond the parent's own pages;
- ``linkage``: one row per (parent, linked id) from ``relationships.<name>.data`` (tag links);
- ``each``: the child's own path is read once per linked id (flow messages, one read per flow action of
  the flows that changed), stamped with the linked id as pass value ``Parent.key``.

Every child record carries ``_parent`` (the parent's id and attributes), read by ``parent.<name>`` columns
and, for incremental children, as the partition cursor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from klaviyo_dagster.ingest.objects import KlaviyoObject, get_object
from klaviyo_dagster.ingest.windows import Window

PARENT_KEY = "_parent"


def _linkage(rec: Mapping[str, Any], relationship: str) -> list[Mapping[str, Any]]:
    data = ((rec.get("relationships") or {}).get(relationship) or {}).get("data")
    if data is None:
        return []
    return data if isinstance(data, list) else [data]


def _parent_view(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": rec.get("id"), **(rec.get("attributes") or {})}


def _skipped(doc: Mapping[str, Any], skip: tuple[str, tuple[str, ...]] | None) -> set[str]:
    """Ids of included resources whose ``skip`` attribute has one of the skip values."""
    if skip is None:
        return set()
    path, values = skip[0].split("."), set(skip[1])
    out = set()
    for inc in doc.get("included") or ():
        value: Any = inc.get("attributes") or {}
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value in values:
            out.add(str(inc.get("id")))
    return out


def parent_pages(
    client: Any, obj: KlaviyoObject, window: Window | None, options: Any, plan_passes: Any
) -> Iterator[tuple[dict, Mapping[str, str]]]:
    """``(document, pass values)`` of every page of the parent's passes, read with the child's include."""
    assert obj.parent is not None
    parent = get_object(obj.parent.object)
    if not obj.incremental:
        # A snapshot child (tag links) reads every parent, whatever its cursor.
        parent = dataclasses.replace(parent, sync="snapshot", cursor=None)
    parent = dataclasses.replace(parent, additional_fields=())
    for one in plan_passes(client, parent, window, options):
        query = {**one.params, **obj.parent.params, "include": obj.parent.relationship}
        for doc in client.paginate(one.path, query, tier=one.tier):
            yield doc, one.values


def iter_child_pages(
    client: Any, obj: KlaviyoObject, window: Window | None, options: Any, plan_passes: Any
) -> Iterator[tuple[list[dict], Mapping[str, str]]]:
    """``(records, pass values)`` of a child object, page by page (``plan_passes`` from fetch.py)."""
    link = obj.parent
    assert link is not None
    for doc, values in parent_pages(client, obj, window, options, plan_passes):
        parents = doc.get("data") or []
        if link.via == "linkage":
            rows = [
                {"type": ref.get("type"), "id": ref.get("id"), "attributes": {}, PARENT_KEY: _parent_view(p)}
                for p in parents
                for ref in _linkage(p, link.relationship)
            ]
            yield rows, values
            continue
        owner: dict[str, dict[str, Any]] = {}
        for p in parents:
            view = _parent_view(p)
            for ref in _linkage(p, link.relationship):
                owner.setdefault(str(ref.get("id")), view)
        if link.via == "include":
            rows = []
            for inc in doc.get("included") or ():
                parent_view = owner.get(str(inc.get("id")))
                if parent_view is not None:
                    rows.append({**inc, PARENT_KEY: parent_view})
            yield rows, values
            continue
        # each: one read of the child's path per linked id (but not of those that cannot have any)
        page_params = {"page[size]": str(obj.page_size)} if obj.page_size else {}
        params = {**page_params, **obj.params}
        skipped = _skipped(doc, link.skip)
        for child_id, parent_view in owner.items():
            if child_id in skipped:
                continue
            stamped = {**values, link.key or "parent_id": child_id}
            for child_doc in client.paginate(obj.path.format(id=child_id), params, tier=obj.tier):
                rows = [{**r, PARENT_KEY: parent_view} for r in child_doc.get("data") or ()]
                yield rows, stamped
