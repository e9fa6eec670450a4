"""JSON:API documents for the sandbox: resources, sparse fieldsets, relationship links, paging links.

Links are absolute URLs to the sandbox itself; collection links carry the full (URL-encoded) query of the
request with `page[cursor]` replaced. A missing next/prev page is omitted from `links` (the spec types
them as non-nullable URIs).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from klaviyo_dagster.sandbox.paging import Page


def project(attrs: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    """Sparse fieldset: keep only `wanted` attributes (dotted names select nested keys)."""
    if not wanted:
        return attrs
    out: dict[str, Any] = {}
    for name in wanted:
        if name == "id":
            continue
        parts = name.split(".")
        src: Any = attrs
        for part in parts[:-1]:
            src = src.get(part) if isinstance(src, dict) else None
        if not isinstance(src, dict) or parts[-1] not in src:
            continue
        dst = out
        for part in parts[:-1]:
            nxt = dst.get(part)
            if not isinstance(nxt, dict):
                nxt = dst[part] = {}
            dst = nxt
        dst[parts[-1]] = src[parts[-1]]
    return out


def resource(rtype: str, rid: str, attrs: dict[str, Any], base_url: str, path: str,
             fields: dict[str, list[str]] | None = None,
             relationships: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON:API resource object with `links.self` = base_url + path."""
    out: dict[str, Any] = {"type": rtype, "id": rid, "attributes": project(attrs, (fields or {}).get(rtype))}
    if relationships:
        out["relationships"] = relationships
    out["links"] = {"self": f"{base_url}{path}"}
    return out


def rel(base_url: str, owner_path: str, name: str, data: Any = None, with_data: bool = False,
        related_only: bool = False) -> dict[str, Any]:
    """A relationship object with `self`/`related` links (and `data` when given)."""
    if related_only:
        links = {"related": f"{base_url}{owner_path}{name}/"}
    else:
        links = {"self": f"{base_url}{owner_path}relationships/{name}/", "related": f"{base_url}{owner_path}{name}/"}
    out: dict[str, Any] = {}
    if with_data or data is not None:
        out["data"] = data
    out["links"] = links
    return out


def page_url(base_url: str, path: str, raw: dict[str, str], cursor: str | None) -> str:
    query = [(k, v) for k, v in raw.items() if k != "page[cursor]"]
    if cursor is not None:
        query.append(("page[cursor]", cursor))
    return f"{base_url}{path}" + (f"?{urlencode(query)}" if query else "")


def collection(data: list[dict[str, Any]], base_url: str, path: str, raw: dict[str, str], page: Page | None,
               included: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A collection document with self/next/prev links."""
    links = {"self": page_url(base_url, path, raw, raw.get("page[cursor]"))}
    if page is not None and page.next_cursor:
        links["next"] = page_url(base_url, path, raw, page.next_cursor)
    if page is not None and page.prev_cursor:
        links["prev"] = page_url(base_url, path, raw, page.prev_cursor)
    doc: dict[str, Any] = {"data": data, "links": links}
    if included is not None:
        doc["included"] = included
    return doc


def single(data: dict[str, Any], base_url: str, path: str, raw: dict[str, str],
           included: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"data": data, "links": {"self": page_url(base_url, path, raw, None)}}
    if included is not None:
        doc["included"] = included
    return doc
