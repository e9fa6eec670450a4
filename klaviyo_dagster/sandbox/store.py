"""The sandbox's mutable account: the lazy base data plus a thread-safe overlay of writes.

Writes never touch the base: a profile created or updated by a bulk import lives in the overlay (its base
index, if any, is then skipped by the `updated` walk and served from the overlay, at its new `updated`
position); list membership changes are per-list added/removed sets; new lists, bulk import jobs and
released late events are overlay state too. Every read goes through `Store` so the overlay is applied
consistently by the API and by the ground-truth accessors.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from klaviyo_dagster.sandbox.catalog import Group
from klaviyo_dagster.sandbox.generate import LATE_STRIDE, BaseData
from klaviyo_dagster.sandbox.ids import encode_ulid, short_id
from klaviyo_dagster.sandbox.paging import OrderedSource, Overlay
from klaviyo_dagster.sandbox.semantics import Semantics
from klaviyo_dagster.sandbox.timeline import iso

IDENTITY_FIELDS = ("email", "phone_number", "external_id")
PROFILE_ATTRS = ("email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale",
                 "title", "image", "created", "updated", "last_event_date", "location", "properties")


@dataclass
class GroupState:
    """A list or segment with its overlay membership changes."""

    group: Group
    added: Overlay = field(default_factory=Overlay)  # ref = profile id, key = joined_group_at ms
    removed: set[int] = field(default_factory=set)  # base profile indices removed


@dataclass
class Job:
    """A profile bulk import job."""

    id: str
    created_ms: int
    started_ms: int
    done_ms: int
    rows: list[dict[str, Any]] | None
    list_ids: list[str]
    total: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    profile_ids: list[str] = field(default_factory=list)
    applied: bool = False
    row_index: list[int] = field(default_factory=list)  # each row's position in the POSTed profiles
    sent: list[dict[str, Any]] = field(default_factory=list)  # identifiers of every POSTed row (for truth)

    def status(self, now_ms: int) -> str:
        if self.applied:
            return "complete"
        return "processing" if now_ms >= self.started_ms else "queued"


class Store:
    """Base data + overlay, guarded by one re-entrant lock."""

    def __init__(self, base: BaseData, clock_ms: Callable[[], int]) -> None:
        self.base = base
        self.clock_ms = clock_ms
        self.lock = threading.RLock()
        self.p_attrs: dict[str, dict[str, Any]] = {}
        self.p_pidx: dict[str, int] = {}
        self.p_base_modified: set[int] = set()
        self.p_new = Overlay()
        self.p_updated = Overlay()
        self.p_index: dict[str, dict[str, str]] = {f: {} for f in IDENTITY_FIELDS}
        self.groups: dict[str, dict[str, GroupState]] = {
            kind: {g.id: GroupState(g) for g in groups} for kind, groups in base.groups.items()}
        self.lists_created = 0
        # Switches for behaviours Klaviyo leaves open (the server puts its own here); `row_check(k, row)`
        # (set by writes.WriteApi) is asked at job completion whether a row fails (-> import error).
        self.semantics = Semantics()
        self.row_check: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = None
        self.late_released = 0
        self.jobs: dict[str, Job] = {}
        self.job_seq = 0
        self.metric_by_id = {m["id"]: m for m in base.metrics}
        self.metric_ids = [m["id"] for m in base.metrics]
        # Activation writes beyond profiles and lists (writes_events.py, writes_consent.py, writes_privacy.py):
        self.metrics_new: list[dict[str, Any]] = []  # metrics created by their first event
        self.events_new: dict[str, dict[str, Any]] = {}  # event id -> record, in `events_overlay` by datetime
        self.events_overlay = Overlay()
        self.event_keys: set[tuple[str, str, str]] = set()  # (profile id, metric id, unique_id) seen
        self.consent: dict[str, dict[str, Any]] = {}  # profile id -> `subscriptions` after consent writes
        self.p_deleted: set[str] = set()  # profile ids removed by deletion (and their base indices below)
        self.p_deleted_idx: set[int] = set()
        self.deferred: list[tuple[int, int, Callable[[], None]]] = []  # (due ms, seq, effect) of async writes
        self.deferred_seq = 0

    # ---- profiles -------------------------------------------------------------------------------------
    def _profile_rec(self, pid: str, attrs: dict[str, Any], pidx: int) -> dict[str, Any]:
        return {"type": "profile", "id": pid, "attributes": attrs, "_pidx": pidx, "_store": self}

    def profile_by_base(self, i: int) -> dict[str, Any]:
        pid = self.base.profile_id(i)
        attrs = self.p_attrs.get(pid)
        if attrs is not None:
            return self._profile_rec(pid, attrs, i)
        pid, attrs = self.base.profile(i)
        return self._profile_rec(pid, attrs, i)

    def profile(self, pid: str) -> dict[str, Any] | None:
        if pid in self.p_deleted:
            return None
        attrs = self.p_attrs.get(pid)
        if attrs is not None:
            return self._profile_rec(pid, attrs, self.p_pidx[pid])
        i = self.base.profile_index(pid)
        return None if i is None else self.profile_by_base(i)

    def profile_by_ref(self, ref: tuple[str, Any]) -> dict[str, Any]:
        return self.profile_by_base(ref[1]) if ref[0] == "b" else self.profile(ref[1])  # type: ignore[return-value]

    def profile_extra(self, rec: dict[str, Any], name: str) -> dict[str, Any]:
        if name == "subscriptions" and rec["id"] in self.consent:
            return self.consent[rec["id"]]
        extra = self.base.profile_extra(rec["_pidx"], name, rec["attributes"])
        if name == "subscriptions" and rec["_pidx"] >= self.base.n_profiles:
            # A profile written through the API (import, event, subscribe) has consented to nothing yet.
            for channel in extra.values():
                for kind in channel.values():
                    kind.update({k: False for k in kind if k.startswith("can_receive")})
                    kind.update(consent="NEVER_SUBSCRIBED", consent_timestamp=None)
                    kind.update({k: None for k in ("method", "method_detail") if k in kind})
                    for key in ("suppression", "list_suppressions"):
                        if key in kind:
                            kind[key] = []
        return extra

    def lookup(self, field_name: str, value: Any) -> list[str]:
        """Profile ids whose `field_name` (id, email, phone_number, external_id) equals `value`."""
        if not isinstance(value, str):
            return []
        if field_name in ("id", "profile_id"):
            return [value] if self.profile(value) is not None else []
        out = []
        hit = self.p_index[field_name].get(value)
        if hit is not None:
            out.append(hit)
        finder = {"email": self.base.index_from_email, "phone_number": self.base.index_from_phone,
                  "external_id": self.base.index_from_external_id}[field_name]
        getter = {"email": self.base.email, "phone_number": self.base.phone,
                  "external_id": self.base.external_id}[field_name]
        for i in finder(value):
            pid = self.base.profile_id(i)
            if pid not in self.p_attrs and i not in self.p_deleted_idx and getter(i) == value:
                out.append(pid)
        return out

    def profile_source(self, view: str) -> OrderedSource:
        b = self.base
        deleted = self.p_deleted_idx
        if view == "updated":
            modified = self.p_base_modified
            skip = (lambda i: i in modified or i in deleted) if deleted else modified.__contains__
            return OrderedSource(b.updated_tl.at, b.n_profiles, skip, self.p_updated, b.updated_tl.first_at_or_after)
        return OrderedSource(b.created_tl.at, b.n_profiles, deleted.__contains__ if deleted else None, self.p_new,
                             b.created_tl.first_at_or_after)

    def all_profile_refs(self) -> Iterator[tuple[str, Any]]:
        for i in range(self.base.n_profiles):
            if i not in self.p_deleted_idx:
                yield ("b", i)
        for entry in self.p_new.items:
            yield ("o", entry[3])

    def profile_count(self) -> int:
        return self.base.n_profiles - len(self.p_deleted_idx) + len(self.p_new)

    def delete_profile(self, pid: str) -> bool:
        """Remove a profile with its list/segment memberships, consent and events; False when unknown."""
        with self.lock:
            rec = self.profile(pid)
            if rec is None:
                return False
            pidx = rec["_pidx"]
            attrs = self.p_attrs.pop(pid, None)
            self.p_pidx.pop(pid, None)
            for f in IDENTITY_FIELDS:
                value = (attrs or {}).get(f)
                if value and self.p_index[f].get(value) == pid:
                    del self.p_index[f][value]
            self.p_new.remove(pid)
            self.p_updated.remove(pid)
            if pidx < self.base.n_profiles:
                self.p_deleted_idx.add(pidx)
            self.p_deleted.add(pid)
            self.consent.pop(pid, None)
            for kind_groups in self.groups.values():
                for st in kind_groups.values():
                    if pid in st.added:
                        st.added.remove(pid)
                    elif pidx < self.base.n_profiles and self.base.member_k(st.group, pidx) is not None:
                        st.removed.add(pidx)
            for eid in [e for e, ev in self.events_new.items() if ev["_profile_id"] == pid]:
                self.events_new.pop(eid)
                self.events_overlay.remove(eid)
            return True

    def defer(self, delay_ms: int, effect: Callable[[], None]) -> None:
        """Run `effect` (an asynchronous write: event import, consent change, deletion) `delay_ms` from now."""
        with self.lock:
            self.deferred_seq += 1
            self.deferred.append((self.clock_ms() + delay_ms, self.deferred_seq, effect))

    # ---- events ---------------------------------------------------------------------------------------
    def event_hidden(self, i: int) -> bool:
        b = self.base
        if self.p_deleted_idx and b.event_profile(i) in self.p_deleted_idx:
            return True
        return b.is_late(i) and (i - b.late_from) // LATE_STRIDE >= self.late_released

    def event_source(self) -> OrderedSource:
        """Base events merged with written ones (refs ("o", event id), see `new_event`)."""
        b = self.base
        return OrderedSource(b.event_tl.at, b.n_events, self.event_hidden, self.events_overlay,
                             b.event_tl.first_at_or_after)

    def event_by_ref(self, ref: tuple[str, Any]) -> dict[str, Any] | None:
        return self.event(ref[1]) if ref[0] == "b" else self.events_new.get(ref[1])

    def all_metrics(self) -> list[dict[str, Any]]:
        return self.base.metrics + self.metrics_new

    def event(self, i: int) -> dict[str, Any]:
        e = self.base.event(i)
        return {"type": "event", "id": e["id"], "attributes": {
            "timestamp": e["ms"] // 1000, "event_properties": e["properties"], "datetime": iso(e["ms"]),
            "uuid": e["uuid"]}, "_metric_id": self.metric_ids[e["metric"]],
            "_profile_id": self.base.profile_id(e["profile"]), "_profile_index": e["profile"]}

    def event_by_id(self, event_id: str) -> dict[str, Any] | None:
        if event_id in self.events_new:
            return self.events_new[event_id]
        i = self.base.event_index(event_id)
        if i is None or self.event_hidden(i):
            return None
        return self.event(i)

    def release_late_events(self, count: int | None = None) -> int:
        """Make late events visible (all pending, or the next `count`); returns how many were released."""
        with self.lock:
            pending = self.base.late_count - self.late_released
            n = pending if count is None else max(0, min(count, pending))
            self.late_released += n
            return n

    def late_pending(self) -> int:
        return self.base.late_count - self.late_released

    # ---- lists and segments ---------------------------------------------------------------------------
    def group(self, kind: str, gid: str) -> GroupState | None:
        return self.groups[kind].get(gid)

    def member_source(self, st: GroupState) -> OrderedSource:
        """Members in joined_group_at order; base refs are ("b", k) for the k-th base member."""
        b, g = self.base, st.group
        off = g.offset_ms
        n = b.member_total(g)

        def key(k: int) -> int:
            return b.created_tl.at(b.member_index(g, k)) + off

        def first(ms: int) -> int:
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if key(mid) < ms:
                    lo = mid + 1
                else:
                    hi = mid
            return lo

        removed = st.removed
        skip = (lambda k: b.member_index(g, k) in removed) if removed else None
        return OrderedSource(key, n, skip, st.added, first)

    def member_ref_profile(self, st: GroupState, ref: tuple[str, Any]) -> tuple[dict[str, Any], int]:
        """(profile record, joined_group_at ms) for a ref yielded by `member_source`."""
        if ref[0] == "b":
            i = self.base.member_index(st.group, ref[1])
            return self.profile_by_base(i), self.base.joined_ms(st.group, i)
        rec = self.profile(ref[1])
        assert rec is not None
        return rec, st.added.where[ref[1]][0]

    def member_joined(self, st: GroupState, pid: str) -> int | None:
        """joined_group_at (ms) of profile `pid` in the group, or None when it is not a member."""
        entry = st.added.where.get(pid)
        if entry is not None:
            return entry[0]
        if pid in self.p_pidx and self.p_pidx[pid] >= self.base.n_profiles:
            return None
        i = self.base.profile_index(pid)
        if i is None or i in st.removed or self.base.member_k(st.group, i) is None:
            return None
        return self.base.joined_ms(st.group, i)

    def member_count(self, st: GroupState) -> int:
        with self.lock:
            return self.base.member_total(st.group) - len(st.removed) + len(st.added)

    def create_list(self, name: str, opt_in_process: str | None) -> GroupState:
        with self.lock:
            now = self.clock_ms()
            self.lists_created += 1
            salt = self.lists_created
            gid = short_id(self.base.seed, "list-created", salt)
            while gid in self.groups["list"]:
                salt += 1_000_003
                gid = short_id(self.base.seed, "list-created", salt)
            g = Group("list", -self.lists_created, gid, {
                "name": name, "created": iso(now), "updated": iso(now),
                "opt_in_process": opt_in_process or "double_opt_in"}, 0, 0)
            st = GroupState(g)
            self.groups["list"][gid] = st
            return st

    def change_members(self, st: GroupState, pids: list[str], add: bool) -> None:
        with self.lock:
            now = self.clock_ms()
            for pid in pids:
                joined = self.member_joined(st, pid)
                if add and joined is None:
                    st.added.put(pid, now)
                elif not add and joined is not None:
                    if pid in st.added:
                        st.added.remove(pid)
                    else:
                        i = self.base.profile_index(pid)
                        if i is not None:
                            st.removed.add(i)
            st.group.attributes["updated"] = iso(now)

    # ---- profile writes -------------------------------------------------------------------------------
    def find_profile(self, pid: str | None, attrs: dict[str, Any]) -> str | None:
        if pid:
            return pid if self.profile(pid) is not None else None
        for f in IDENTITY_FIELDS:
            value = attrs.get(f)
            if value:
                hits = self.lookup(f, value)
                if hits:
                    return hits[0]
        return None

    def upsert_profile(self, pid: str | None, attrs: dict[str, Any], meta: dict[str, Any] | None) -> str:
        """Create or update one profile from bulk-import attributes (nulls never clear a field)."""
        with self.lock:
            now = self.clock_ms()
            target = self.find_profile(pid, attrs)
            if target is not None:
                rec = self.profile(target)
                assert rec is not None
                current = copy.deepcopy(rec["attributes"])
                pidx = rec["_pidx"]
            else:
                pidx = self.base.n_profiles + len(self.p_new)
                target = encode_ulid(self.base.seed, "profile", now, pidx)
                current = {k: None for k in PROFILE_ATTRS}
                current["location"] = {k: None for k in ("address1", "address2", "city", "country",
                                                         "region", "zip", "timezone", "ip")}
                current["properties"] = {}
                current["created"] = iso(now)
                self.p_new.put(target, now - now % 1000)
            for f in IDENTITY_FIELDS:
                old = current.get(f)
                if old and self.p_index[f].get(old) == target:
                    del self.p_index[f][old]
            for k, v in attrs.items():
                if v is None or k in ("_kx", "properties", "location"):
                    continue
                if k in PROFILE_ATTRS and k not in ("created", "updated"):
                    current[k] = v
            if attrs.get("location"):
                loc = dict(current.get("location") or {})
                loc.update({k: v for k, v in attrs["location"].items() if v is not None})
                current["location"] = loc
            props = dict(current.get("properties") or {})
            props.update({k: v for k, v in (attrs.get("properties") or {}).items() if v is not None})
            patch = (meta or {}).get("patch_properties") or {}
            for k, v in (patch.get("append") or {}).items():
                cur = props.get(k)
                cur = [] if cur is None else (cur if isinstance(cur, list) else [cur])
                props[k] = cur + (v if isinstance(v, list) else [v])
            for k, v in (patch.get("unappend") or {}).items():
                if isinstance(props.get(k), list):
                    drop = v if isinstance(v, list) else [v]
                    props[k] = [x for x in props[k] if x not in drop]
            unset = patch.get("unset") or []
            for k in [unset] if isinstance(unset, str) else unset:
                props.pop(k, None)
            current["properties"] = props
            current["updated"] = iso(now)
            self.p_attrs[target] = current
            self.p_pidx[target] = pidx
            if pidx < self.base.n_profiles:
                self.p_base_modified.add(pidx)
            for f in IDENTITY_FIELDS:
                if current.get(f):
                    self.p_index[f][current[f]] = target
            self.p_updated.put(target, now - now % 1000)
            return target

    # ---- bulk import jobs -----------------------------------------------------------------------------
    def create_job(self, rows: list[dict[str, Any]], errors: list[dict[str, Any]], list_ids: list[str],
                   row_index: list[int] | None = None) -> Job:
        with self.lock:
            now = self.clock_ms()
            self.job_seq += 1
            total = len(rows) + (len(errors) if self.semantics.get("import_job_total_count") == "posted" else 0)
            duration = int(self.semantics.get("import_job_seconds") * 1000) + total // 20
            job = Job(id=encode_ulid(self.base.seed, "job", now, self.job_seq), created_ms=now,
                      started_ms=now + min(100, duration), done_ms=now + duration, rows=rows,
                      list_ids=list_ids, total=total, errors=errors,
                      row_index=row_index if row_index is not None else list(range(len(rows))))
            self.jobs[job.id] = job
            return job

    def advance_jobs(self) -> None:
        """Apply every job and deferred write whose processing time has passed (called on each request)."""
        now = self.clock_ms()
        if self.deferred and min(d[0] for d in self.deferred) <= now:
            with self.lock:
                due = sorted(d for d in self.deferred if d[0] <= now)
                self.deferred = [d for d in self.deferred if d[0] > now]
                for _, _, effect in due:
                    effect()
        pending = [j for j in self.jobs.values() if not j.applied and now >= j.done_ms]
        if not pending:
            return
        with self.lock:
            for job in sorted(pending, key=lambda j: j.created_ms):
                if job.applied:
                    continue
                for k, row in zip(job.row_index, job.rows or [], strict=True):
                    err = self.row_check(k, row) if self.row_check is not None else None
                    if err is not None:
                        job.errors.append(err)
                        continue
                    pid = row.get("id")
                    if pid and self.profile(pid) is None:
                        pid = None  # unknown id let through (unknown_import_id=create): identify by the rest
                    pid = self.upsert_profile(pid, row.get("attributes") or {}, row.get("meta"))
                    job.profile_ids.append(pid)
                for gid in job.list_ids:
                    st = self.group("list", gid)
                    if st is not None:
                        self.change_members(st, job.profile_ids, add=True)
                job.rows = None
                job.applied = True
