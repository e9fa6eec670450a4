"""An object entry + a window -> client calls: the passes a partition needs and their pages.

A pass is one paginated collection read (path, query, tier, values stamped on its rows). Entries fan out
into several passes: campaigns one per channel x archived value, flows one per archived value, events one
per selected metric (the API filters metric_id with ``equals`` only), memberships one per list or
segment. Every pass of an incremental object carries the window filter; pages are yielded as they come.

Concurrency (a client with a ``pool``, see client/pool.py): every pass is a cursor chain, and the chains
run at once. A windowed pass whose first page shows the window holds many pages (``SPLIT_MIN_PAGES``)
drops that page and splits the window into sub-windows (about ``PAGES_PER_SUBWINDOW`` pages each, at most
``MAX_SUBWINDOWS``), each read as its own chain with the same filters narrowed to it; records outside a
sub-window's interior bounds (a ``greater-than`` lower bound widened by a second) are dropped, so every
record is read exactly once. Pages arrive in any order; the flattener and the staging table do not care.

With ``raw=True`` (a client with ``paginate_raw``; the flattener says whether the entry can take it) pages
come undecoded as `RawPassPage` (body bytes, pass values, the sub-window's interior bounds), for DuckDB to
parse in the staging write; only the first page of a splittable pass is decoded here, to size its window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from klaviyo_dagster.client.pool import Chain, Spawn
from klaviyo_dagster.client.tiers import Tier
from klaviyo_dagster.ingest.children import iter_child_pages
from klaviyo_dagster.ingest.objects import FanOut, KlaviyoObject
from klaviyo_dagster.ingest.windows import Window, cursor_filter, estimate_pages, inside, split, split_at

# A windowed pass is split once its first page shows at least this many pages in the window.
SPLIT_MIN_PAGES = 4
PAGES_PER_SUBWINDOW = 4
MAX_SUBWINDOWS = 64


class PagingClient(Protocol):
    """The part of `KlaviyoClient` ingest uses."""

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, tier: Tier | None = None
    ) -> Iterator[dict]: ...

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, tier: Tier | None = None) -> dict: ...


@dataclass(frozen=True)
class FetchOptions:
    """Choices made when the definitions are built.

    ``fan_out``: option name -> values (e.g. ``{"event_metrics": ("Placed Order",), "archived":
    ("false",)}``); an absent option keeps the entry's defaults. ``additional_fields``: object name ->
    names of the switchable additional fields to request (absent: the entry's defaults).
    """

    fan_out: Mapping[str, Sequence[str] | None] = field(default_factory=dict)
    additional_fields: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def enabled_fields(self, obj: KlaviyoObject) -> list[str]:
        """Names of ``obj``'s additional fields to request."""
        chosen = self.additional_fields.get(obj.name)
        if chosen is None:
            return [f.name for f in obj.additional_fields if f.default]
        known = {f.name for f in obj.additional_fields}
        unknown = sorted(set(chosen) - known)
        if unknown:
            raise ValueError(
                f"{obj.name}: unknown additional field(s) {unknown}; choose from {sorted(known) or 'none'}"
            )
        return [f.name for f in obj.additional_fields if f.name in set(chosen)]


@dataclass(frozen=True)
class Pass:
    """One paginated read: path, query, tier, and the values its rows carry (``pass.<name>`` columns).

    Windowed passes also keep their fan-out ``clauses`` and ``window`` so they can be narrowed to a sub-window.
    """

    path: str
    params: Mapping[str, str]
    tier: Tier
    values: Mapping[str, str]
    clauses: tuple[str, ...] = ()
    window: Window | None = None

    def narrowed(self, obj: KlaviyoObject, sub: Window) -> Pass:
        """This pass reading only ``sub`` (same fan-out clauses, the cursor filter of ``sub``)."""
        assert obj.cursor is not None
        query = dict(self.params)
        clause = cursor_filter(obj.cursor, sub, obj.lower_op, obj.upper_op, obj.lower_slack_seconds)
        query["filter"] = ",".join([*self.clauses, clause])
        return Pass(self.path, query, self.tier, self.values, self.clauses, sub)

    @property
    def label(self) -> str:
        filt = self.params.get("filter")
        return f"GET {self.path}" + (f" filter={filt}" if filt else "")


def _slowest(tiers: Sequence[Tier]) -> Tier:
    return min(tiers, key=lambda t: (t.steady, t.burst))


def base_params(obj: KlaviyoObject, options: FetchOptions) -> tuple[dict[str, str], Tier]:
    """Query parameters every pass of ``obj`` sends (page size, extra params, additional fields) and tier."""
    params: dict[str, str] = dict(obj.params)
    if obj.page_size:
        params["page[size]"] = str(obj.page_size)
    tiers = [obj.tier]
    by_param: dict[str, list[str]] = {}
    enabled = set(options.enabled_fields(obj))
    for extra in obj.additional_fields:
        if extra.name in enabled and extra.path is None:  # per-record fields: see per_record_reads
            by_param.setdefault(extra.param, []).append(extra.name)
            if extra.tier is not None:
                tiers.append(extra.tier)
    for param, names in by_param.items():
        params[param] = ",".join(names)
    return params, _slowest(tiers)


def _axis_values(client: PagingClient, axis: FanOut, options: FetchOptions) -> tuple[str, ...]:
    chosen = options.fan_out.get(axis.option) if axis.option else None
    if chosen is None:
        return tuple(axis.values)
    values = tuple(str(v) for v in chosen)
    if axis.lookup and values:
        return _lookup(client, axis, values)
    return values


def _lookup(client: PagingClient, axis: FanOut, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """Resolve ``wanted`` (ids or names of resources at ``axis.lookup``, or of groups of them at
    ``axis.groups_lookup``) to ids, in the given order; a group stands for its members."""
    by_id, by_name = _index(client, axis.lookup or "", None)
    groups: dict[str, list[str]] | None = None
    group_names: dict[str, list[str]] = {}
    out: list[str] = []
    for value in wanted:
        ids = [value] if value in by_id else by_name.get(value)
        if not ids and axis.groups_lookup:
            if groups is None:  # only asked for when a value is not a plain resource
                path, relationship = axis.groups_lookup
                groups, group_names = _index(client, path, {"include": relationship})
            found = [value] if value in groups else group_names.get(value) or []
            ids = [member for gid in found for member in groups[gid]]
            if found and not ids:
                raise ValueError(f"{axis.name} {value!r} names a group at {axis.groups_lookup[0]} without members; "
                                 "choose its member resources instead")
        if not ids:
            known = ", ".join(sorted(n for n in [*by_name, *group_names] if n)[:20])
            where = f"{axis.lookup}" + (f" or {axis.groups_lookup[0]}" if axis.groups_lookup else "")
            raise ValueError(
                f"{axis.name} {value!r} is neither an id nor a name found at {where}; "
                f"known names include: {known or 'none'}. Fix the selection passed to build_ingest_definitions()."
            )
        out.extend(i for i in ids if i not in out)
    return tuple(out)


def _index(client: PagingClient, path: str, params: dict[str, str] | None) -> tuple[dict, dict[str, list[str]]]:
    """``({id: members or name}, {name: [ids]})`` of the resources at ``path``; a resource's members are the
    ids its ``relationships.<include>.data`` links (when ``params`` asks for an include)."""
    rel = (params or {}).get("include")
    by_id: dict[str, Any] = {}
    by_name: dict[str, list[str]] = {}
    for doc in client.paginate(path, params):
        for rec in doc.get("data") or ():
            name = (rec.get("attributes") or {}).get("name")
            linked = ((rec.get("relationships") or {}).get(rel) or {}).get("data") if rel else None
            by_id[rec["id"]] = [x["id"] for x in linked or ()] if rel else name
            by_name.setdefault(name, []).append(rec["id"])
    return by_id, by_name


def _group_ids(client: PagingClient, obj: KlaviyoObject) -> Iterator[str]:
    assert obj.groups is not None
    params = {"page[size]": str(obj.groups.page_size)} if obj.groups.page_size else None
    for doc in client.paginate(obj.groups.path, params):
        for rec in doc.get("data") or ():
            yield rec["id"]


def plan_passes(
    client: PagingClient, obj: KlaviyoObject, window: Window | None, options: FetchOptions
) -> Iterator[Pass]:
    """The passes one partition (or range) of ``obj`` needs; empty when the window is empty."""
    params, tier = base_params(obj, options)
    if obj.incremental:
        if window is None:
            raise ValueError(f"{obj.name} is incremental: a window is required")
        if window.empty:
            return
        assert obj.cursor is not None
        window_filter = cursor_filter(obj.cursor, window, obj.lower_op, obj.upper_op, obj.lower_slack_seconds)
    else:
        window_filter = ""
    if obj.groups is not None:
        for group_id in _group_ids(client, obj):
            yield Pass(obj.path.format(group_id=group_id), params, tier, {obj.groups.column: group_id})
        return
    axes = [(axis, _axis_values(client, axis, options)) for axis in obj.fan_out]
    axes = [(axis, values) for axis, values in axes if values]
    for combo in itertools.product(*(values for _, values in axes)):
        fan = tuple(axis.filter.format(value=value) for (axis, _), value in zip(axes, combo, strict=True))
        clauses = [*fan, window_filter] if window_filter else list(fan)
        query = dict(params)
        if clauses:
            query["filter"] = ",".join(clauses)
        stamped = {axis.column: value for (axis, _), value in zip(axes, combo, strict=True) if axis.column}
        yield Pass(obj.path, query, tier, stamped, fan, window if window_filter else None)


Page = tuple[list[dict], Mapping[str, str]]


@dataclass(frozen=True)
class RawPassPage:
    """One undecoded page of a pass: its body, the pass values, and the interior bounds of its sub-window
    (records whose cursor lies outside ``[lower, upper)`` are another chain's; None: unbounded)."""

    body: bytes
    values: Mapping[str, str]
    lower: datetime | None = None
    upper: datetime | None = None


def iter_pages(
    client: PagingClient, obj: KlaviyoObject, window: Window | None, options: FetchOptions, *, raw: bool = False
) -> Iterator[Page | RawPassPage]:
    """``(records, pass values)`` (or, with ``raw``, `RawPassPage`) for every page of every pass, as they
    arrive (concurrently when it can). Entries with per-record additional fields always come decoded."""
    extras = [f for f in obj.additional_fields if f.path and f.name in set(options.enabled_fields(obj))]
    if extras:
        yield from per_record_reads(client, _iter_pages(client, obj, window, options), extras)  # type: ignore[arg-type]
        return
    yield from _iter_pages(client, obj, window, options, raw=raw)


def per_record_reads(client: PagingClient, pages: Iterator[Page], extras: Sequence[Any]) -> Iterator[Page]:
    """Add each per-record additional field to every record of ``pages``: one read of the field's path
    per record (``profile_count``: ``GET /api/lists/{id}``, on its own slower tier, paced by the client)."""
    for records, values in pages:
        for rec in records:
            attrs = rec.setdefault("attributes", {})
            for extra in extras:
                kind = extra.param[extra.param.index("[") + 1:-1]  # additional-fields[list] -> list
                doc = client.get(extra.path.format(id=rec["id"]),
                                 {extra.param: extra.name, f"fields[{kind}]": extra.name}, tier=extra.tier)
                attrs[extra.name] = ((doc.get("data") or {}).get("attributes") or {}).get(extra.name)
        yield records, values


def _iter_pages(
    client: PagingClient, obj: KlaviyoObject, window: Window | None, options: FetchOptions, *, raw: bool = False
) -> Iterator[Page | RawPassPage]:
    if obj.parent is not None:  # read through the parent entry's passes (children.py)
        yield from iter_child_pages(client, obj, window, options, plan_passes)
        return
    raw = raw and hasattr(client, "paginate_raw")
    pool = getattr(client, "pool", None)
    if pool is None or pool.max_workers <= 1:
        for one in plan_passes(client, obj, window, options):
            if raw:
                for page in client.paginate_raw(one.path, one.params, tier=one.tier):  # type: ignore[attr-defined]
                    yield RawPassPage(page.body, one.values)
                continue
            for doc in client.paginate(one.path, one.params, tier=one.tier):
                yield doc.get("data") or [], one.values
        return
    chains = [pass_chain(client, obj, one, raw=raw) for one in plan_passes(client, obj, window, options)]
    yield from pool.run(chains)


def _first_page(client: Any, one: Pass, raw: bool) -> tuple[Iterator[Any], Any, list[dict], bool]:
    """(the page iterator, its first item or None, the first page's records, whether more pages follow)."""
    if not raw:
        pages = client.paginate(one.path, one.params, tier=one.tier)
        first = next(pages, None)
        if first is None:
            return pages, None, [], False
        links = first.get("links")
        return pages, first, first.get("data") or [], bool(links.get("next")) if isinstance(links, dict) else False
    pages = client.paginate_raw(one.path, one.params, tier=one.tier)
    first = next(pages, None)
    if first is None:
        return pages, None, [], False
    return pages, first, [], bool(first.next_url)


def pass_chain(client: Any, obj: KlaviyoObject, one: Pass, *, raw: bool = False) -> Chain:
    """The chain reading ``one``; a windowed pass with many pages splits into sub-window chains instead."""

    def item(page: Any, values: Mapping[str, str]) -> Page | RawPassPage:
        return RawPassPage(page.body, values) if raw else (page.get("data") or [], values)

    def run(spawn: Spawn) -> Iterator[Page | RawPassPage]:
        pages, first, records, more = _first_page(client, one, raw)
        try:
            if first is None:
                return
            if more and one.window is not None and obj.cursor is not None:
                if raw:  # the one page decoded here: it sizes the window
                    records = orjson.loads(first.body).get("data") or []
                estimate, first_at = estimate_pages(records, obj.cursor, one.window)
                if estimate >= SPLIT_MIN_PAGES:
                    parts = subwindow_parts(estimate)
                    # Equal parts from where the records start; the stretch before that is one more (small) part.
                    dense = split(Window(first_at, one.window.end), parts)
                    subs = split_at(one.window, [s.start for s in dense])
                    if len(subs) > 1:
                        for sub in subs:
                            spawn(sub_window_chain(client, obj, one, sub, raw=raw))
                        return  # the first page is read again inside the first sub-window
            yield item(first, one.values)
            for page in pages:
                yield item(page, one.values)
        finally:
            pages.close()  # type: ignore[attr-defined]

    return Chain(client.bucket_key("GET", one.path, one.params, one.tier), run, one.label)


def subwindow_parts(estimate: float) -> int:
    """How many sub-windows a window of about ``estimate`` pages is read in.

    ``estimate`` is infinite when the whole first page sits within one second (nothing to scale by):
    that window is as dense as it gets and takes the most parts.
    """
    if math.isinf(estimate):
        return MAX_SUBWINDOWS
    return min(MAX_SUBWINDOWS, max(2, int(estimate // PAGES_PER_SUBWINDOW)))


def sub_window_chain(client: Any, obj: KlaviyoObject, one: Pass, sub: Window, *, raw: bool = False) -> Chain:
    """The chain reading ``one`` narrowed to ``sub``; drops records outside ``sub``'s interior bounds
    (raw pages carry the bounds instead, for the staging write to apply)."""
    assert one.window is not None and obj.cursor is not None
    narrow = one.narrowed(obj, sub)
    # The outer bounds stay the flattener's business (it counts what falls outside the partition window).
    lower = sub.start if sub.start > one.window.start else None
    upper = sub.end if sub.end < one.window.end else None
    key = obj.cursor

    def run(spawn: Spawn) -> Iterator[Page | RawPassPage]:
        if raw:
            for page in client.paginate_raw(narrow.path, narrow.params, tier=narrow.tier):
                yield RawPassPage(page.body, narrow.values, lower, upper)
            return
        for doc in client.paginate(narrow.path, narrow.params, tier=narrow.tier):
            yield inside(doc.get("data") or [], key, lower, upper), narrow.values

    return Chain(client.bucket_key("GET", narrow.path, narrow.params, narrow.tier), run, narrow.label)
