"""Ground truth for tests: what the sandbox currently serves, read straight from its store.

`records(type, field, start, end)` returns JSON:API resources (default attributes, as the API renders
them) whose `field` lies in [start, end), including archived campaigns and flows and every channel;
`members(kind, group_id)` returns (profile_id, joined_group_at) pairs; `import_jobs()` every bulk import
job with the identifiers of the rows it was sent (tests count the jobs that carried a row);
`date_range()` the span of the data.
Late events appear only once released (as in the API).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from klaviyo_dagster.sandbox.api import ReadApi
from klaviyo_dagster.sandbox.filters import to_ms
from klaviyo_dagster.sandbox.params import Params
from klaviyo_dagster.sandbox.store import Store
from klaviyo_dagster.sandbox.timeline import dt_to_ms, ms_to_dt

_ALIASES = {"profiles": "profile", "events": "event", "lists": "list", "segments": "segment", "metrics": "metric",
            "campaigns": "campaign", "flows": "flow", "templates": "template",
            "campaign-messages": "campaign-message", "flow-actions": "flow-action", "flow-messages": "flow-message",
            "tags": "tag", "tag-groups": "tag-group"}


class Truth:
    """Read-only accessors over a running sandbox's data."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self._store = store
        self._reads = reads

    def _all(self, rtype: str) -> list[dict[str, Any]]:
        s, r, p = self._store, self._reads, Params()
        b = s.base
        if rtype == "profile":
            return [r.profile_resource(s.profile_by_ref(ref), p) for ref in s.all_profile_refs()]
        if rtype == "event":
            walk = s.event_source().walk(None, None, False, None, None)
            return [r.event_resource(rec, p) for _, ref in walk if (rec := s.event_by_ref(ref)) is not None]
        if rtype in ("list", "segment"):
            return [r.simple_resource(r.group_rec(st), p) for st in s.groups[rtype].values()]
        source = {"metric": s.all_metrics(), "campaign": b.campaigns, "flow": b.flows, "template": b.templates,
                  "campaign-message": b.campaign_messages, "flow-action": b.flow_actions,
                  "flow-message": b.flow_messages, "tag": b.tags, "tag-group": b.tag_groups}.get(rtype)
        if source is None:
            raise ValueError(f"unknown type {rtype!r}; use one of profile, event, list, segment, metric, "
                             "campaign, campaign-message, flow, flow-action, flow-message, template, tag, tag-group")
        out = []
        for rec in source:
            res = r.simple_resource(rec, p)
            if rtype == "campaign":
                res["channel"] = rec["channel"]
            out.append(res)
        return out

    def _windowed(self, rtype: str, field: str | None, lo: int | None, hi: int | None) -> list[dict[str, Any]] | None:
        """Profiles/events in a window of their monotone field, by binary search (None: not applicable)."""
        s, r, p = self._store, self._reads, Params()
        hi_incl = None if hi is None else hi - 1
        if rtype == "event" and field in ("datetime", "timestamp"):
            walk = s.event_source().walk(None, None, False, lo, hi_incl)
            return [r.event_resource(rec, p) for _, ref in walk if (rec := s.event_by_ref(ref)) is not None]
        if rtype == "profile" and field in ("updated", "created"):
            walk = s.profile_source(field).walk(None, None, False, lo, hi_incl)
            return [r.profile_resource(s.profile_by_ref(ref), p) for _, ref in walk]
        return None

    def records(self, rtype: str, field: str | None = None, start: datetime | None = None,
                end: datetime | None = None) -> list[dict[str, Any]]:
        """Resources of `rtype` whose attribute `field` lies in [start, end) (all of them without a field)."""
        rtype = _ALIASES.get(rtype, rtype)
        lo = dt_to_ms(start) if start is not None else None
        hi = dt_to_ms(end) if end is not None else None
        with self._store.lock:
            self._store.advance_jobs()
            recs = self._windowed(rtype, field, lo, hi)
            if recs is None:
                recs = self._all(rtype)
        if field is None:
            return recs
        out = []
        for rec in recs:
            ms = to_ms(rec["attributes"].get(field))
            if ms is None or (lo is not None and ms < lo) or (hi is not None and ms >= hi):
                continue
            out.append(rec)
        return out

    def members(self, kind: str, group_id: str) -> list[tuple[str, datetime]]:
        """(profile_id, joined_group_at) of every member of list/segment `group_id`, by joined time."""
        kind = _ALIASES.get(kind, kind)
        s = self._store
        with s.lock:
            s.advance_jobs()
            st = s.group(kind, group_id)
            if st is None:
                raise ValueError(f"no {kind} with id {group_id!r}")
            src = s.member_source(st)
            out = []
            for pos, ref in src.walk(None, None, False, None, None):
                pid = s.base.profile_id(s.base.member_index(st.group, ref[1])) if ref[0] == "b" else ref[1]
                out.append((pid, ms_to_dt(pos[0])))
        return out

    def links(self, rtype: str, relationship: str = "tags") -> list[tuple[str, str]]:
        """(owner id, linked id) pairs: e.g. ``links("campaign")`` -> every (campaign id, tag id), and
        ``links("flow-action", "flow-messages")``, ``links("flow", "flow-actions")``."""
        rtype = _ALIASES.get(rtype, rtype)
        field = {"tags": "tag_ids", "flow-actions": "action_ids", "flow-messages": "message_ids",
                 "campaign-messages": "message_ids"}[relationship]
        with self._store.lock:
            if rtype in ("list", "segment"):
                return [(st.group.id, t) for st in self._store.groups[rtype].values() for t in st.group.tag_ids]
            b = self._store.base
            source = {"campaign": b.campaigns, "flow": b.flows, "flow-action": b.flow_actions}[rtype]
            return [(rec["id"], linked) for rec in source for linked in rec.get(field, ())]

    def exclusions(self) -> list[tuple[str, str, str | None, str, datetime | None]]:
        """(profile_id, channel, list_id or None, reason, timestamp) of every suppression the sandbox holds:
        email global suppressions and list suppressions, and SMS opt-outs (consent UNSUBSCRIBED, reason
        UNSUBSCRIBE: the spec's SMS subscription has no suppression list)."""
        s = self._store

        def when(value: str | None) -> datetime | None:
            return None if value is None else ms_to_dt(to_ms(value))

        out: list[tuple[str, str, str | None, str, datetime | None]] = []
        with s.lock:
            s.advance_jobs()
            for ref in s.all_profile_refs():
                rec = s.profile_by_ref(ref)
                subs = s.profile_extra(rec, "subscriptions")
                email = (subs.get("email") or {}).get("marketing") or {}
                for x in email.get("suppression") or ():
                    out.append((rec["id"], "email", None, x["reason"], when(x["timestamp"])))
                for x in email.get("list_suppressions") or ():
                    out.append((rec["id"], "email", x["list_id"], x["reason"], when(x["timestamp"])))
                sms = (subs.get("sms") or {}).get("marketing") or {}
                if sms.get("consent") == "UNSUBSCRIBED":
                    out.append((rec["id"], "sms", None, "UNSUBSCRIBE",
                                when(sms.get("consent_timestamp") or sms.get("last_updated"))))
        return out

    def import_jobs(self) -> list[dict[str, Any]]:
        """Every profile bulk import job the account holds, oldest first: ``{"id", "created_at",
        "status", "total_count", "list_ids", "rows"}``, ``rows`` being the identifiers (email,
        phone_number, external_id, id) of each profile as POSTed, in order."""
        s = self._store
        with s.lock:
            s.advance_jobs()
            now = s.clock_ms()
            return [{"id": j.id, "created_at": ms_to_dt(j.created_ms), "status": j.status(now),
                     "total_count": j.total, "list_ids": list(j.list_ids), "rows": [dict(r) for r in j.sent]}
                    for j in sorted(s.jobs.values(), key=lambda j: (j.created_ms, j.id))]

    def date_range(self) -> tuple[datetime, datetime]:
        """(first, last) datetimes the base profile/event data spans."""
        b = self._store.base
        return ms_to_dt(b.created_tl.start), ms_to_dt(b.data_end)
