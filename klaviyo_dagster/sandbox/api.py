"""Read endpoints of the sandbox: one handler per spec operation, over the `Store`.

Big collections (profiles, events, list/segment members) are served by keyset walks over their monotone
orderings with the time-window part of the filter turned into a binary search; identity filters (id,
email, phone, external id) become point lookups; small collections are filtered and sorted in memory.
Write endpoints live in writes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.sandbox.filters import Condition, matches, window
from klaviyo_dagster.sandbox.paging import CursorError, Page, keyset_page, offset_page
from klaviyo_dagster.sandbox.params import ApiError, Params, bad
from klaviyo_dagster.sandbox.render import collection, rel, resource, single
from klaviyo_dagster.sandbox.store import GroupState, Store
from klaviyo_dagster.sandbox.timeline import iso

POINT_FIELDS = ("id", "profile_id", "email", "phone_number", "external_id")
PLURAL = {"profile": "profiles", "event": "events", "list": "lists", "segment": "segments", "metric": "metrics",
          "campaign": "campaigns", "campaign-message": "campaign-messages", "flow": "flows",
          "flow-action": "flow-actions", "flow-message": "flow-messages", "template": "templates", "tag": "tags",
          "tag-group": "tag-groups", "profile-bulk-import-job": "profile-bulk-import-jobs"}


@dataclass
class Request:
    """What a handler needs to know about one request."""

    params: Params
    path: str  # normalised request path with trailing slash, e.g. /api/profiles/
    ids: dict[str, str]
    body: bytes = b""


class AnyOf(list):
    """Values collected through a list (e.g. every suppression's timestamp): a condition matches any."""


def _walk(cur: Any, parts: list[str]) -> Any:
    for k, part in enumerate(parts):
        if isinstance(cur, list):
            return AnyOf(v for item in cur if (v := _walk(item, parts[k:])) is not None)
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def value_of(rec: dict[str, Any], name: str) -> Any:
    """A record's value for a filter or sort field (dotted names walk into attributes)."""
    if name in ("id", "profile_id"):
        return rec["id"]
    if name == "metric_id":
        return rec.get("_metric_id")
    if name == "messages.channel":
        return rec.get("channel")
    if name in ("_kx", "push_token"):
        return None
    parts = name.split(".")
    if parts[0] in ("subscriptions", "predictive_analytics") and "_store" in rec:
        return _walk(rec["_store"].profile_extra(rec, parts[0]), parts[1:])
    return _walk(rec["attributes"], parts)


def accepts(rec: dict[str, Any], conds: list[Condition]) -> bool:
    for c in conds:
        value = value_of(rec, c.field)
        if isinstance(value, AnyOf):
            if not any(matches(c, v) for v in value):
                return False
        elif not matches(c, value):
            return False
    return True


def sort_records(recs: list[dict[str, Any]], field: str | None, desc: bool,
                 getter: Callable[[dict[str, Any], str], Any] = value_of) -> list[dict[str, Any]]:
    if not field:
        return recs
    def key(r: dict[str, Any]) -> Any:
        v = getter(r, field)
        if isinstance(v, AnyOf):
            v = (max(v) if desc else min(v)) if v else None
        return v

    keyed = [(key(r), r) for r in recs]
    present = [kr for kr in keyed if kr[0] is not None]
    missing = [r for k, r in keyed if k is None]
    present.sort(key=lambda kr: (kr[0], kr[1]["id"]), reverse=desc)
    return [r for _, r in present] + missing


def with_cursor_errors(fn: Callable[[], Page]) -> Page:
    try:
        return fn()
    except CursorError as e:
        raise bad(str(e), parameter="page[cursor]") from None


class ReadApi:
    """Handlers for the GET operations."""

    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.base_url = base_url
        self.custom_metric_ids: set[str] = set()  # set by custom_metrics.CustomMetrics

    # ---- rendering ------------------------------------------------------------------------------------
    def profile_resource(self, rec: dict[str, Any], p: Params, joined_ms: int | None = None,
                         with_rels: bool = True) -> dict[str, Any]:
        attrs = dict(rec["attributes"])
        for extra in ("subscriptions", "predictive_analytics"):
            if p.extra("profile", extra):
                attrs[extra] = self.store.profile_extra(rec, extra)
        if joined_ms is not None:
            attrs["joined_group_at"] = iso(joined_ms)
        fields = p.fields
        if fields.get("profile"):
            wanted = list(fields["profile"]) + [e for e in ("subscriptions", "predictive_analytics")
                                                if p.extra("profile", e)]
            if joined_ms is not None:
                wanted.append("joined_group_at")  # members always carry it (the spec requires it)
            fields = {**fields, "profile": wanted}
        path = f"/api/profiles/{rec['id']}/"
        rels = None
        if with_rels:
            rels = {"lists": rel(self.base_url, path, "lists"), "segments": rel(self.base_url, path, "segments")}
        return resource("profile", rec["id"], attrs, self.base_url, path, fields, rels)

    def event_resource(self, rec: dict[str, Any], p: Params) -> dict[str, Any]:
        path = f"/api/events/{rec['id']}/"
        rels = {"profile": rel(self.base_url, path, "profile", {"type": "profile", "id": rec["_profile_id"]}),
                "metric": rel(self.base_url, path, "metric", {"type": "metric", "id": rec["_metric_id"]})}
        return resource("event", rec["id"], rec["attributes"], self.base_url, path, p.fields, rels)

    def simple_resource(self, rec: dict[str, Any], p: Params) -> dict[str, Any]:
        rtype = rec["type"]
        path = f"/api/{PLURAL[rtype]}/{rec['id']}/"
        rels: dict[str, Any] | None = None
        base = self.base_url

        # Every relationship named in `include` carries `data` (null when nothing is linked).
        def linked(name: str, ltype: str, ids: list[str] | None) -> dict[str, Any]:
            data = [{"type": ltype, "id": i} for i in ids or ()] if ids is not None else None
            return rel(base, path, name, data, with_data=name in p.include)

        def one(name: str, ltype: str, rid: str | None) -> dict[str, Any]:
            return rel(base, path, name, {"type": ltype, "id": rid} if rid else None, with_data=name in p.include)

        # Linkage of tags only when asked for (include=tags), like Klaviyo.
        def tags() -> dict[str, Any]:
            return linked("tags", "tag", rec.get("tag_ids", []) if "tags" in p.include else None)

        if rtype == "campaign":
            rels = {"campaign-messages": linked("campaign-messages", "campaign-message", rec["message_ids"]),
                    "tags": tags()}
        elif rtype == "flow":
            rels = {"flow-actions": linked("flow-actions", "flow-action", rec["action_ids"]), "tags": tags()}
        elif rtype in ("list", "segment"):
            rels = {"profiles": rel(base, path, "profiles"), "tags": tags()}
        elif rtype == "metric":
            rels = {"flow-triggers": rel(base, path, "flow-triggers")}
        elif rtype == "campaign-message":
            rels = {"campaign": one("campaign", "campaign", rec["campaign_id"]),
                    "template": one("template", "template", rec.get("template_id")),
                    "image": one("image", "image", rec.get("image_id"))}
        elif rtype == "flow-action":
            rels = {"flow": one("flow", "flow", rec["flow_id"]),
                    "flow-messages": linked("flow-messages", "flow-message", rec.get("message_ids", []))}
        elif rtype == "flow-message":
            rels = {"flow-action": one("flow-action", "flow-action", rec["action_id"]),
                    "template": one("template", "template", rec.get("template_id"))}
        elif rtype == "tag":
            rels = {"tag-group": one("tag-group", "tag-group", rec["tag_group_id"]),
                    **{name: rel(base, path, name) for name in ("lists", "segments", "campaigns", "flows")}}
        elif rtype == "tag-group":
            rels = {"tags": linked("tags", "tag", rec["tag_ids"])}
        return resource(rtype, rec["id"], rec["attributes"], base, path, p.fields, rels)

    # ---- generic paging -------------------------------------------------------------------------------
    def _size(self, p: Params, default: int) -> int:
        return p.size if p.size is not None else default

    def memory_collection(self, req: Request, recs: list[dict[str, Any]], default_size: int,
                          render: Callable[[dict[str, Any]], dict[str, Any]],
                          included: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                          default_sort: str | None = None) -> dict[str, Any]:
        p = req.params
        recs = [r for r in recs if accepts(r, p.filters)]
        recs = sort_records(recs, p.sort or default_sort, p.desc)
        page = with_cursor_errors(lambda: offset_page(recs, p.cursor, self._size(p, default_size)))
        inc = included(page.items) if included is not None else None
        return collection([render(r) for r in page.items], self.base_url, req.path, p.raw, page, inc)

    # ---- profiles -------------------------------------------------------------------------------------
    def point_candidates(self, conds: list[Condition]) -> list[str] | None:
        """Profile ids from the first identity condition (equals/any), or None when there is none."""
        for c in conds:
            if c.field in POINT_FIELDS and c.op in ("equals", "any"):
                values = c.value if isinstance(c.value, list) else [c.value]
                out: list[str] = []
                for v in values:
                    for pid in self.store.lookup("id" if c.field == "profile_id" else c.field, v):
                        if pid not in out:
                            out.append(pid)
                return out
        return None

    def get_profiles(self, req: Request) -> dict[str, Any]:
        p, store = req.params, self.store
        size = self._size(p, 20)
        render = lambda r: self.profile_resource(r, p)  # noqa: E731
        with store.lock:
            if any(c.field == "_kx" for c in p.filters):
                return collection([], self.base_url, req.path, p.raw, None)  # the sandbox has no _kx values
            cands = self.point_candidates(p.filters)
            if cands is not None:
                recs = [store.profile(pid) for pid in cands]
                return self.memory_collection(req, [r for r in recs if r is not None], 20, render,
                                              default_sort="id")
            sort = p.sort
            if sort is None:
                sort = "updated" if p.conds("updated") else "created" if p.conds("created") else "id"
            if sort not in ("id", "created", "updated"):
                recs = [store.profile_by_ref(ref) for ref in store.all_profile_refs()]
                return self.memory_collection(req, recs, 20, render)
            view = "updated" if sort == "updated" else "created"
            lo, hi = window(p.filters, view)
            residual = [c for c in p.filters if c.field != view]

            def accept(ref: tuple[str, Any]) -> dict[str, Any] | None:
                rec = store.profile_by_ref(ref)
                return rec if accepts(rec, residual) else None

            page = with_cursor_errors(lambda: keyset_page(store.profile_source(view), p.cursor, size, p.desc,
                                                          lo, hi, accept, view))
        return collection([render(r) for r in page.items], self.base_url, req.path, p.raw, page)

    def get_profile(self, req: Request) -> dict[str, Any]:
        p, store = req.params, self.store
        rec = store.profile(req.ids["id"])
        if rec is None:
            raise not_found("profile", req.ids["id"])
        data = self.profile_resource(rec, p)
        included = None
        if p.include:
            included = []
            for kind in ("list", "segment"):
                name = PLURAL[kind]
                if name not in p.include:
                    continue
                ids = [gid for gid, st in store.groups[kind].items() if store.member_joined(st, rec["id"]) is not None]
                data["relationships"][name]["data"] = [{"type": kind, "id": gid} for gid in ids]
                included += [self.simple_resource(self.group_rec(store.groups[kind][g]), p) for g in ids]
        return single(data, self.base_url, req.path, p.raw, included)

    # ---- events ---------------------------------------------------------------------------------------
    def get_events(self, req: Request) -> dict[str, Any]:
        p, store = req.params, self.store
        base = store.base
        size = self._size(p, 200)
        bounds = [window(p.filters, f) for f in ("datetime", "timestamp")]
        los = [b[0] for b in bounds if b[0] is not None]
        his = [b[1] for b in bounds if b[1] is not None]
        lo, hi = (max(los) if los else None), (min(his) if his else None)
        metric = [v for c in p.filters if c.field == "metric_id" for v in (c.value if isinstance(c.value, list) else [c.value])]
        profile = [c.value for c in p.filters if c.field == "profile_id"]
        if self.custom_metric_ids.intersection(m for m in metric if isinstance(m, str)):
            raise bad(custom_metric_refusal(next(m for m in metric if m in self.custom_metric_ids)),
                      parameter="filter")
        metric_idx = {store.metric_ids.index(m) if m in store.metric_ids else -1 for m in metric}
        profile_idx = set()
        for pid in profile:
            i = base.profile_index(pid) if isinstance(pid, str) else None
            profile_idx.add(-1 if i is None else i)

        def accept(ref: tuple[str, Any]) -> dict[str, Any] | None:
            if ref[0] == "o":  # a written event (writes_events.py)
                rec = store.events_new.get(ref[1])
                if rec is None or any(m != rec["_metric_id"] for m in metric) \
                        or any(pid != rec["_profile_id"] for pid in profile):
                    return None
                return rec
            i = ref[1]
            if metric_idx and (len(metric_idx) > 1 or base.event_metric(i) not in metric_idx):
                return None
            if profile_idx and (len(profile_idx) > 1 or base.event_profile(i) not in profile_idx):
                return None
            return store.event(i)

        view = "datetime"
        with store.lock:
            page = with_cursor_errors(lambda: keyset_page(store.event_source(), p.cursor, size, p.desc, lo, hi,
                                                          accept, view))
        return collection([self.event_resource(r, p) for r in page.items], self.base_url, req.path, p.raw, page,
                          self.event_included(page.items, p))

    def event_included(self, recs: list[dict[str, Any]], p: Params) -> list[dict[str, Any]] | None:
        if not p.include:
            return None
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for r in recs:
            if "metric" in p.include and r["_metric_id"] not in seen:
                seen.add(r["_metric_id"])
                out.append(self.simple_resource(self.store.metric_by_id[r["_metric_id"]], p))
            if "profile" in p.include and r["_profile_id"] not in seen:
                seen.add(r["_profile_id"])
                prof = self.store.profile(r["_profile_id"])
                if prof is not None:
                    out.append(self.profile_resource(prof, p, with_rels=False))
        return out

    def get_event(self, req: Request) -> dict[str, Any]:
        rec = self.store.event_by_id(req.ids["id"])
        if rec is None:
            raise not_found("event", req.ids["id"])
        p = req.params
        return single(self.event_resource(rec, p), self.base_url, req.path, p.raw, self.event_included([rec], p))

    # ---- metrics --------------------------------------------------------------------------------------
    def get_metrics(self, req: Request) -> dict[str, Any]:
        return self.memory_collection(req, self.store.all_metrics(), 200, lambda r: self.simple_resource(r, req.params))

    def get_metric(self, req: Request) -> dict[str, Any]:
        rec = self.store.metric_by_id.get(req.ids["id"])
        if rec is None:
            raise not_found("metric", req.ids["id"])
        return single(self.simple_resource(rec, req.params), self.base_url, req.path, req.params.raw)

    # ---- lists and segments ---------------------------------------------------------------------------
    def group_rec(self, st: GroupState, count: bool = False) -> dict[str, Any]:
        g = st.group
        attrs = dict(g.attributes)
        if count:
            attrs["profile_count"] = self.store.member_count(st)
        return {"type": g.kind, "id": g.id, "attributes": attrs, "tag_ids": g.tag_ids}

    def get_groups(self, req: Request, kind: str) -> dict[str, Any]:
        with self.store.lock:
            recs = [self.group_rec(st) for st in self.store.groups[kind].values()]
        p = req.params
        return self.memory_collection(req, recs, 10, lambda r: self.simple_resource(r, p),
                                      lambda items: self.included(items, p))

    def get_group(self, req: Request, kind: str) -> dict[str, Any]:
        st = self.store.group(kind, req.ids["id"])
        if st is None:
            raise not_found(kind, req.ids["id"])
        p = req.params
        rec = self.group_rec(st, count=p.extra(kind, "profile_count"))
        return single(self.simple_resource(rec, p), self.base_url, req.path, p.raw, self.included([rec], p))

    def get_members(self, req: Request, kind: str, ids_only: bool) -> dict[str, Any]:
        p, store = req.params, self.store
        st = store.group(kind, req.ids["id"])
        if st is None:
            raise not_found(kind, req.ids["id"])
        size = self._size(p, 20)

        def render(item: tuple[dict[str, Any], int]) -> dict[str, Any]:
            rec, joined = item
            if ids_only:
                return {"type": "profile", "id": rec["id"]}
            return self.profile_resource(rec, p, joined_ms=joined, with_rels=True)

        with store.lock:
            if any(c.field in ("_kx", "push_token") and c.op in ("equals", "any") for c in p.filters):
                page = Page([], None, None)  # the sandbox has no push tokens or _kx values
            else:
                cands = self.point_candidates(p.filters)
                if cands is not None:
                    items = []
                    for pid in cands:
                        joined = store.member_joined(st, pid)
                        rec = store.profile(pid)
                        if joined is not None and rec is not None:
                            items.append(self._member_rec(rec, joined))
                    items = [r for r in items if accepts(r, p.filters)]
                    items = sort_records(items, "joined_group_at", p.desc)
                    page = with_cursor_errors(lambda: offset_page(items, p.cursor, size))
                    page.items = [(r, r["_joined"]) for r in page.items]
                else:
                    lo, hi = window(p.filters, "joined_group_at")
                    residual = [c for c in p.filters if c.field != "joined_group_at"]

                    def accept(ref: tuple[str, Any]) -> tuple[dict[str, Any], int] | None:
                        rec, joined = store.member_ref_profile(st, ref)
                        if residual and not accepts(rec, residual):
                            return None
                        return rec, joined

                    page = with_cursor_errors(lambda: keyset_page(store.member_source(st), p.cursor, size, p.desc,
                                                                  lo, hi, accept, "joined"))
        return collection([render(item) for item in page.items], self.base_url, req.path, p.raw, page)

    @staticmethod
    def _member_rec(rec: dict[str, Any], joined: int) -> dict[str, Any]:
        return {**rec, "attributes": {**rec["attributes"], "joined_group_at": iso(joined)}, "_joined": joined}

    # ---- campaigns, flows, templates ------------------------------------------------------------------
    def get_campaigns(self, req: Request) -> dict[str, Any]:
        p = req.params
        channels = [c for c in p.filters if c.field == "messages.channel"]
        if len(channels) != 1 or channels[0].op != "equals" or channels[0].value not in ("email", "sms", "mobile_push"):
            raise bad("campaigns need exactly one channel filter: add "
                      "filter=equals(messages.channel,'email') (or 'sms', 'mobile_push'); one channel per request",
                      parameter="filter")
        recs = self._archived_default(self.store.base.campaigns, p)
        return self.memory_collection(req, recs, 100, lambda r: self.simple_resource(r, p),
                                      lambda items: self._messages_included(items, p))

    def _archived_default(self, recs: list[dict[str, Any]], p: Params) -> list[dict[str, Any]]:
        if not p.conds("archived"):
            return [r for r in recs if not r["attributes"].get("archived")]
        return recs

    # Which record field lists the linked ids of each relationship, and where the linked records live.
    _LINKS = {"campaign-messages": ("message_ids", "campaign_messages"), "flow-actions": ("action_ids", "flow_actions"),
              "flow-messages": ("message_ids", "flow_messages"), "tags": ("tag_ids", "tags"),
              "tag-group": ("tag_group_id", "tag_groups"), "campaign": ("campaign_id", "campaigns"),
              "flow": ("flow_id", "flows"), "flow-action": ("action_id", "flow_actions"),
              "template": ("template_id", "templates")}

    def included(self, items: list[dict[str, Any]], p: Params) -> list[dict[str, Any]] | None:
        """The `included` of a compound document: every resource linked from `items` through a relationship
        named in `include` (each once); None when nothing was asked for."""
        if not p.include:
            return None
        base = self.store.base
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for name in p.include:
            link = self._LINKS.get(name)
            if link is None:
                continue
            ids_field, collection_name = link
            by_id = base.index(collection_name)
            for item in items:
                linked = item.get(ids_field)
                for lid in [linked] if isinstance(linked, str) else linked or ():
                    target = by_id.get(lid)
                    if target is not None and (target["type"], lid) not in seen:
                        seen.add((target["type"], lid))
                        out.append(self.simple_resource(target, p))
        return out

    def _messages_included(self, items: list[dict[str, Any]], p: Params) -> list[dict[str, Any]] | None:
        return self.included(items, p)

    _actions_included = _messages_included

    def _get_one(self, req: Request, records: list[dict[str, Any]], rtype: str,
                 included: Any) -> dict[str, Any]:
        """A single campaign or flow by id, with its `included` children when asked for."""
        rec = next((r for r in records if r["id"] == req.ids["id"]), None)
        if rec is None:
            raise not_found(rtype, req.ids["id"])
        p = req.params
        return single(self.simple_resource(rec, p), self.base_url, req.path, p.raw, included([rec], p))

    def get_campaign(self, req: Request) -> dict[str, Any]:
        return self._get_one(req, self.store.base.campaigns, "campaign", self._messages_included)

    def get_flows(self, req: Request) -> dict[str, Any]:
        p = req.params
        recs = self._archived_default(self.store.base.flows, p)
        return self.memory_collection(req, recs, 50, lambda r: self.simple_resource(r, p),
                                      lambda items: self._actions_included(items, p))

    def get_flow(self, req: Request) -> dict[str, Any]:
        return self._get_one(req, self.store.base.flows, "flow", self._actions_included)

    def get_tags(self, req: Request) -> dict[str, Any]:
        p = req.params
        return self.memory_collection(req, self.store.base.tags, 50, lambda r: self.simple_resource(r, p),
                                      lambda items: self.included(items, p))

    def get_by_id(self, req: Request, collection_name: str, rtype: str) -> dict[str, Any]:
        """One resource of a small collection by id (tags, flow actions, flow and campaign messages)."""
        rec = self.store.base.index(collection_name).get(req.ids["id"])
        if rec is None:
            raise not_found(rtype, req.ids["id"])
        p = req.params
        return single(self.simple_resource(rec, p), self.base_url, req.path, p.raw, self.included([rec], p))

    def get_action_messages(self, req: Request) -> dict[str, Any]:
        """GET /api/flow-actions/{id}/flow-messages."""
        base = self.store.base
        action = base.index("flow_actions").get(req.ids["id"])
        if action is None:
            raise not_found("flow-action", req.ids["id"])
        messages = base.index("flow_messages")
        recs = [messages[m] for m in action["message_ids"]]
        return self.memory_collection(req, recs, 50, lambda r: self.simple_resource(r, req.params))

    def get_templates(self, req: Request) -> dict[str, Any]:
        return self.memory_collection(req, self.store.base.templates, 10,
                                      lambda r: self.simple_resource(r, req.params))

    def get_template(self, req: Request) -> dict[str, Any]:
        rec = next((t for t in self.store.base.templates if t["id"] == req.ids["id"]), None)
        if rec is None:
            raise not_found("template", req.ids["id"])
        return single(self.simple_resource(rec, req.params), self.base_url, req.path, req.params.raw)


def custom_metric_refusal(metric_id: str) -> str:
    return (f"metric_id {metric_id!r} is a custom metric: custom metrics are not supported in the metric_id "
            "filter; filter on each of its member metrics instead (GET /api/custom-metrics/"
            f"{metric_id}/relationships/metrics lists them)")


def not_found(rtype: str, rid: str) -> ApiError:
    return ApiError(404, "not_found", f"A {rtype} with id {rid!r} does not exist in this account; "
                    "check the id (ids are case-sensitive)")
