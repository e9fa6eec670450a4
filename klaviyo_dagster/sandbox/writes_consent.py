"""Consent writes of the sandbox: bulk subscribe / unsubscribe jobs and bulk suppress / unsuppress jobs.

- `POST /api/profile-subscription-bulk-create-jobs` (at most 1,000 profiles): email and/or SMS marketing
  (and SMS transactional) consent becomes SUBSCRIBED, UNSUBSCRIBE / SPAM_REPORT / USER_SUPPRESSED
  suppressions are removed and the profile joins `relationships.list`. On a double opt-in list (and
  without `historical_import`) nothing changes until the person confirms, which in the sandbox never
  happens: consent and membership stay as they were. `historical_import` needs `consented_at` in the past.
- `POST /api/profile-subscription-bulk-delete-jobs` (at most 100 profiles): the profile leaves
  `relationships.list`; a member of that list gets a list suppression and keeps its consent under
  `unsubscribe_with_list=list_only` (default), else (and always for non-members, as the spec warns) consent
  becomes UNSUBSCRIBED globally (email gains an UNSUBSCRIBE suppression).
- `POST /api/profile-suppression-bulk-create-jobs` / `-delete-jobs` (at most 100 emails, or every member
  of `relationships.list`/`segment`): add / remove the USER_SUPPRESSED email suppression; 202 with a job
  that `GET .../{job_id}` and the job collections report (queued -> processing -> complete, skipped_count
  counts emails with no profile on unsuppress).
Unknown people are created by subscribe, unsubscribe and suppress (as the spec says) but not by unsuppress;
a consent change moves the profile's `updated` (so incremental profile reads see it).
Subscription jobs answer 202 without a body and take effect ~0.3 s later; the effect is read back through
`GET /api/profiles?additional-fields[profile]=subscriptions`.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from klaviyo_dagster.sandbox.api import ReadApi, Request, not_found
from klaviyo_dagster.sandbox.ids import encode_ulid
from klaviyo_dagster.sandbox.params import bad
from klaviyo_dagster.sandbox.render import rel, resource, single
from klaviyo_dagster.sandbox.semantics import Switch, register
from klaviyo_dagster.sandbox.store import Store
from klaviyo_dagster.sandbox.timeline import iso
from klaviyo_dagster.sandbox.writes import identifier_problem, parse_body

MAX_SUBSCRIBE = 1_000
MAX_UNSUBSCRIBE = 100
MAX_SUPPRESS = 100
SUBSCRIBE_OP = "POST /api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE_OP = "POST /api/profile-subscription-bulk-delete-jobs"
SUPPRESS = "profile-suppression-bulk-create-job"
UNSUPPRESS = "profile-suppression-bulk-delete-job"
ACCEPTED = frozenset({SUBSCRIBE_OP, UNSUBSCRIBE_OP})  # answered 202 without a body
REMOVED_BY_SUBSCRIBE = ("UNSUBSCRIBE", "SPAM_REPORT", "USER_SUPPRESSED")
CHANNEL_IDENTIFIER = {"email": "email", "sms": "phone_number", "whatsapp": "phone_number"}


register(Switch(
    "unsubscribe_with_list", "list_only", values=("list_only", "global"),
    known="The spec warns on profile-subscription-bulk-delete-jobs: profiles not in the specified list are "
          "globally unsubscribed; all profiles are removed from the list; profiles carry "
          "`subscriptions.email.marketing.list_suppressions` [{list_id, reason, timestamp}].",
    unknown="What a member of the named list gets: `list_only` it leaves the list with a list suppression "
            "(reason USER_SUPPRESSED) and keeps its channel consent, `global` its channel consent becomes "
            "UNSUBSCRIBED too. Non-members are unsubscribed globally either way."))


@dataclass
class SuppressionJob:
    """A bulk suppress or unsuppress job."""

    id: str
    kind: str  # SUPPRESS | UNSUPPRESS
    created_ms: int
    done_ms: int
    total: int
    list_ids: list[str] = field(default_factory=list)
    segment_ids: list[str] = field(default_factory=list)
    completed: int = 0
    skipped: int = 0
    applied: bool = False

    def status(self, now_ms: int) -> str:
        if self.applied:
            return "complete"
        return "processing" if now_ms >= self.created_ms + 100 else "queued"


def _parse_dt(value: Any, pointer: str) -> int:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"{value!r} is not an ISO 8601 datetime", pointer=pointer) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


class ConsentWrites:
    """Handlers of the subscription and suppression operations."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self.store = store
        self.reads = reads
        self.base_url = reads.base_url
        self.jobs: dict[str, SuppressionJob] = {}
        self.seq = 0

    def handlers(self) -> dict[str, Any]:
        return {
            SUBSCRIBE_OP: self.subscribe, UNSUBSCRIBE_OP: self.unsubscribe,
            "POST /api/profile-suppression-bulk-create-jobs": lambda q: self.suppress(q, SUPPRESS),
            "POST /api/profile-suppression-bulk-delete-jobs": lambda q: self.suppress(q, UNSUPPRESS),
            "GET /api/profile-suppression-bulk-create-jobs": lambda q: self.get_jobs(q, SUPPRESS),
            "GET /api/profile-suppression-bulk-delete-jobs": lambda q: self.get_jobs(q, UNSUPPRESS),
            "GET /api/profile-suppression-bulk-create-jobs/{job_id}": lambda q: self.get_job(q, SUPPRESS),
            "GET /api/profile-suppression-bulk-delete-jobs/{job_id}": lambda q: self.get_job(q, UNSUPPRESS),
        }

    # ---- shared parsing --------------------------------------------------------------------------------
    def _job_data(self, req: Request, rtype: str) -> dict[str, Any]:
        body = parse_body(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != rtype:
            raise bad(f"'data' must be an object with \"type\": \"{rtype}\"", pointer="/data/type")
        if not isinstance(data.get("attributes"), dict):
            raise bad("'data.attributes' must be an object", pointer="/data/attributes")
        return data

    def _group(self, data: dict[str, Any], kind: str) -> str | None:
        node = ((data.get("relationships") or {}).get(kind) or {}).get("data")
        if node is None:
            return None
        if not isinstance(node, dict) or node.get("type") != kind or not isinstance(node.get("id"), str):
            raise bad(f"relationships.{kind}.data must be {{\"type\": \"{kind}\", \"id\": ...}}",
                      pointer=f"/data/relationships/{kind}/data")
        if self.store.group(kind, node["id"]) is None:
            raise not_found(kind, node["id"])
        return node["id"]

    def _profiles(self, data: dict[str, Any], limit: int, required: bool = True) -> list[dict[str, Any]]:
        profiles = data["attributes"].get("profiles")
        rows = profiles.get("data") if isinstance(profiles, dict) else None
        if rows is None and not required:
            return []
        if not isinstance(rows, list) or (required and not rows):
            raise bad("data.attributes.profiles.data must be a non-empty list of profiles",
                      pointer="/data/attributes/profiles/data")
        if len(rows) > limit:
            raise bad(f"at most {limit} profiles per request, got {len(rows)}; split them into several jobs",
                      pointer="/data/attributes/profiles/data")
        for k, row in enumerate(rows):
            if not isinstance(row, dict) or row.get("type") != "profile" or not isinstance(row.get("attributes"), dict):
                raise bad("each profile must be {\"type\": \"profile\", \"attributes\": {...}}",
                          pointer=f"/data/attributes/profiles/data/{k}")
            problem = identifier_problem(row["attributes"])
            if problem is not None:
                raise bad(problem[1], pointer=f"/data/attributes/profiles/data/{k}/attributes/{problem[0]}")
        return rows

    def _channels(self, row: dict[str, Any], k: int, consent: str, historical: bool) -> dict[str, dict[str, Any]]:
        """{channel: {"marketing"/"transactional": consented_at ms or None}} of one profile, validated."""
        subs = row["attributes"].get("subscriptions")
        ptr = f"/data/attributes/profiles/data/{k}/attributes/subscriptions"
        if not isinstance(subs, dict) or not subs:
            raise bad("each profile needs 'subscriptions' naming at least one channel", pointer=ptr)
        out: dict[str, dict[str, Any]] = {}
        for channel, params in subs.items():
            if channel not in ("email", "sms", "whatsapp", "push"):
                raise bad(f"unknown channel {channel!r}: use email, sms, whatsapp or push", pointer=f"{ptr}/{channel}")
            if params is None:
                continue
            if not isinstance(params, dict):
                raise bad(f"subscriptions.{channel} must be an object", pointer=f"{ptr}/{channel}")
            ident = CHANNEL_IDENTIFIER.get(channel)
            if ident and not row["attributes"].get(ident):
                raise bad(f"the {channel} channel needs the profile's {ident}", pointer=f"{ptr}/{channel}")
            kinds: dict[str, Any] = {}
            for kind, p in params.items():
                if kind in ("tokens", "open_tracking"):
                    continue
                cptr = f"{ptr}/{channel}/{kind}"
                if not isinstance(p, dict) or p.get("consent") != consent:
                    raise bad(f"subscriptions.{channel}.{kind}.consent must be \"{consent}\"", pointer=f"{cptr}/consent")
                at = p.get("consented_at")
                at_ms = None if at is None else _parse_dt(at, f"{cptr}/consented_at")
                if historical and (at_ms is None or at_ms > self.store.clock_ms()):
                    raise bad("historical_import needs consented_at, in the past, for every subscription",
                              pointer=f"{cptr}/consented_at")
                kinds[kind] = at_ms
            out[channel] = kinds
        return out

    # ---- consent state ---------------------------------------------------------------------------------
    def _target(self, row: dict[str, Any], create: bool) -> str | None:
        attrs = {k: row["attributes"].get(k) for k in ("email", "phone_number") if row["attributes"].get(k)}
        pid = row.get("id") if isinstance(row.get("id"), str) else None
        found = self.store.find_profile(pid, attrs)
        if found is None and create:
            found = self.store.upsert_profile(None, attrs, None)
        return found

    def subscriptions(self, pid: str) -> dict[str, Any]:
        """A mutable copy of a profile's current `subscriptions` (stored back by `_save`)."""
        rec = self.store.profile(pid)
        assert rec is not None
        return copy.deepcopy(self.store.profile_extra(rec, "subscriptions"))

    def _save(self, pid: str, subs: dict[str, Any]) -> None:
        email = subs.get("email", {}).get("marketing", {})
        if email:
            email["can_receive_email_marketing"] = email.get("consent") == "SUBSCRIBED" and not email.get("suppression")
        self.store.consent[pid] = subs
        self.store.upsert_profile(pid, {}, None)  # a consent change updates the profile (its `updated` moves)

    def _set(self, subs: dict[str, Any], channel: str, kind: str, consent: str, at_ms: int | None) -> None:
        now = iso(self.store.clock_ms())
        node = subs.setdefault(channel, {}).setdefault(kind, {})
        node.update({"consent": consent, "consent_timestamp": iso(at_ms) if at_ms is not None else now,
                     "last_updated": now, "method": "API", "method_detail": None})
        if channel in ("sms", "whatsapp"):
            node[f"can_receive_{channel}_{kind}"] = consent == "SUBSCRIBED"
        elif channel == "push":
            node["can_receive_push_marketing"] = consent == "SUBSCRIBED"
        if channel == "email" and kind == "marketing":
            sup = node.setdefault("suppression", [])
            if consent == "SUBSCRIBED":
                node["suppression"] = [s for s in sup if s.get("reason") not in REMOVED_BY_SUBSCRIBE]
            elif not any(s.get("reason") == "UNSUBSCRIBE" for s in sup):
                sup.append({"reason": "UNSUBSCRIBE", "timestamp": now})

    # ---- subscribe / unsubscribe -----------------------------------------------------------------------
    def subscribe(self, req: Request) -> None:
        data = self._job_data(req, "profile-subscription-bulk-create-job")
        historical = bool(data["attributes"].get("historical_import"))
        rows = self._profiles(data, MAX_SUBSCRIBE)
        list_id = self._group(data, "list")
        plans = [(row, self._channels(row, k, "SUBSCRIBED", historical)) for k, row in enumerate(rows)]
        st = self.store.group("list", list_id) if list_id else None
        double = st is not None and st.group.attributes.get("opt_in_process") == "double_opt_in" and not historical
        self.store.defer(300, lambda: self._apply(plans, "SUBSCRIBED", list_id, awaiting_confirmation=double))

    def unsubscribe(self, req: Request) -> None:
        data = self._job_data(req, "profile-subscription-bulk-delete-job")
        rows = self._profiles(data, MAX_UNSUBSCRIBE)
        list_id = self._group(data, "list")
        plans = [(row, self._channels(row, k, "UNSUBSCRIBED", False)) for k, row in enumerate(rows)]
        self.store.defer(300, lambda: self._apply(plans, "UNSUBSCRIBED", list_id, awaiting_confirmation=False))

    def _apply(self, plans: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]], consent: str,
               list_id: str | None, awaiting_confirmation: bool) -> None:
        pids = []
        for row, channels in plans:
            pid = self._target(row, create=True)
            if pid is None:
                continue
            pids.append(pid)
            if awaiting_confirmation:
                continue  # a double opt-in list: the confirmation message is sent, nothing changes yet
            subs = self.subscriptions(pid)
            st = self.store.group("list", list_id) if list_id else None
            if (consent == "UNSUBSCRIBED" and set(channels) == {"email"} and st is not None
                    and self.store.member_joined(st, pid) is not None
                    and self.store.semantics.get("unsubscribe_with_list") == "list_only"):
                node = subs.setdefault("email", {}).setdefault("marketing", {})
                node["list_suppressions"] = [x for x in node.get("list_suppressions") or [] if x.get("list_id") != list_id]
                node["list_suppressions"].append({"list_id": list_id, "reason": "USER_SUPPRESSED",
                                                  "timestamp": iso(self.store.clock_ms())})
            else:
                for channel, kinds in channels.items():
                    for kind, at_ms in kinds.items():
                        self._set(subs, channel, kind, consent, at_ms)
            if consent == "SUBSCRIBED" and list_id:
                node = subs.get("email", {}).get("marketing", {})
                if node.get("list_suppressions"):
                    node["list_suppressions"] = [x for x in node["list_suppressions"] if x.get("list_id") != list_id]
            self._save(pid, subs)
        st = self.store.group("list", list_id) if list_id else None
        if st is not None and pids and not awaiting_confirmation:
            self.store.change_members(st, pids, add=consent == "SUBSCRIBED")

    # ---- suppressions ----------------------------------------------------------------------------------
    def suppress(self, req: Request, kind: str) -> dict[str, Any]:
        data = self._job_data(req, kind)
        rows = self._profiles(data, MAX_SUPPRESS, required=False)
        list_id, segment_id = self._group(data, "list"), self._group(data, "segment")
        if not rows and not (list_id or segment_id):
            raise bad("name the profiles (by email) or a list or segment whose members to "
                      + ("suppress" if kind == SUPPRESS else "unsuppress"), pointer="/data/attributes/profiles")
        for k, row in enumerate(rows):
            if not row["attributes"].get("email"):
                raise bad("suppressions are by email: each profile needs 'email'",
                          pointer=f"/data/attributes/profiles/data/{k}/attributes/email")
        emails = [r["attributes"]["email"] for r in rows]
        s = self.store
        with s.lock:
            now = s.clock_ms()
            self.seq += 1
            job = SuppressionJob(encode_ulid(s.base.seed, kind, now, self.seq), kind, now, now + 300,
                                 len(emails), [list_id] if list_id else [], [segment_id] if segment_id else [])
            self.jobs[job.id] = job
        s.defer(300, lambda: self._apply_suppression(job, emails))
        path = f"/api/{kind}s/"
        return single(self._job_resource(job, req), self.base_url, path + job.id + "/", {})

    def _group_emails(self, kind: str, gid: str) -> list[str]:
        st = self.store.group(kind, gid)
        if st is None:
            return []
        out = []
        for _, ref in self.store.member_source(st).walk(None, None, False, None, None):
            rec, _ = self.store.member_ref_profile(st, ref)
            if rec["attributes"].get("email"):
                out.append(rec["attributes"]["email"])
        return out

    def _apply_suppression(self, job: SuppressionJob, emails: list[str]) -> None:
        for gid in job.list_ids:
            emails = emails + self._group_emails("list", gid)
        for gid in job.segment_ids:
            emails = emails + self._group_emails("segment", gid)
        job.total = len(emails)
        now = iso(self.store.clock_ms())
        for email in emails:
            pid = self._target({"attributes": {"email": email}}, create=job.kind == SUPPRESS)
            if pid is None:
                job.skipped += 1
                continue
            subs = self.subscriptions(pid)
            node = subs.setdefault("email", {}).setdefault("marketing", {})
            sup = [x for x in node.get("suppression") or [] if x.get("reason") != "USER_SUPPRESSED"]
            if job.kind == SUPPRESS:
                sup.append({"reason": "USER_SUPPRESSED", "timestamp": now})
            node["suppression"] = sup
            self._save(pid, subs)
            job.completed += 1
        job.applied = True

    def _job_resource(self, job: SuppressionJob, req: Request) -> dict[str, Any]:
        now = self.store.clock_ms()
        status = job.status(now)
        attrs = {"status": status, "created_at": iso(job.created_ms), "total_count": job.total,
                 "completed_count": job.completed, "completed_at": iso(job.done_ms) if job.applied else None,
                 "skipped_count": job.skipped}
        path = f"/api/{job.kind}s/{job.id}/"
        rels = {"lists": rel(self.base_url, path, "lists", [{"type": "list", "id": g} for g in job.list_ids]),
                "segments": rel(self.base_url, path, "segments", [{"type": "segment", "id": g} for g in job.segment_ids])}
        return resource(job.kind, job.id, attrs, self.base_url, path, req.params.fields, rels)

    def get_job(self, req: Request, kind: str) -> dict[str, Any]:
        job = self.jobs.get(req.ids["job_id"])
        if job is None or job.kind != kind:
            raise not_found(kind, req.ids["job_id"])
        return single(self._job_resource(job, req), self.base_url, req.path, req.params.raw)

    def get_jobs(self, req: Request, kind: str) -> dict[str, Any]:
        now = self.store.clock_ms()
        recs = [{"type": kind, "id": j.id, "_job": j, "attributes": {
            "status": j.status(now), "created": iso(j.created_ms), "list_id": (j.list_ids or [None])[0],
            "segment_id": (j.segment_ids or [None])[0]}} for j in self.jobs.values() if j.kind == kind]
        return self.reads.memory_collection(req, recs, 20, lambda r: self._job_resource(r["_job"], req),
                                            default_sort="created")
