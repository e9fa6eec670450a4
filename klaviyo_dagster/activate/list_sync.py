"""The ``klaviyo/list_membership_sync`` asset: make Klaviyo lists hold exactly an audience table's people.

Per target list (:func:`run_list_sync`, plain Python; :func:`build_list_sync_asset` wraps it):
1. resolve the list (lists.py): explicit id, else exact name (our registry first, then ``equals(name,...)``),
   else create it and record it at once, so retries never make a second list;
2. read the list's members (id + identifiers) from Klaviyo page by page into a warehouse snapshot;
3. plan in DuckDB: audience rows matched to a member are kept; rows resolvable to a known profile id
   (explicit, ingested ``profiles_current``) are added; the rest are imported through a bulk import
   job carrying ``relationships.lists``; members matched by no row are removed;
4. guards (empty audience, removal share) run before any write; dry run stops after planning;
5. adds and removes go in batches of at most 1,000 ids (a 400 is isolated to the ids it names, or bisected:
   isolate.py); every change is logged;
6. verify: the members are read back and planned again. Profile ids that did not become members (Klaviyo
   refused them, or ignored them: merged or deleted profiles the warehouse still has) are marked stale
   and their rows imported by identifiers with the list relationship, once; then the list is read back
   again and the remaining difference (audience rows not members + members not in the audience) is the
   ``difference`` metadata, 0 on success (the asset check ``list_matches_audience`` fails otherwise).
"""


import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from dagster import AssetCheckResult, AssetExecutionContext, AssetsDefinition, Config, MetadataValue
from pydantic import Field

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.inputs import (
    ActivationRefused,
    ActivationTarget,
    build_activation_run_asset,
    check_table_name,
    table_columns,
)
from klaviyo_dagster.activate.isolate import RELATIONSHIP_ROW_POINTER, send_isolating
from klaviyo_dagster.activate.jobs import (
    UNKNOWN_WAIT_S,
    JobPacker,
    PackedProfile,
    job_verdict,
    ledger_items,
    poll_job,
    resume_open_jobs,
    submit_tracked,
)
from klaviyo_dagster.activate.lists import resolve_list, snapshot_members
from klaviyo_dagster.activate.render import ProfileColumns
from klaviyo_dagster.activate.validate import profile_problem
from klaviyo_dagster.warehouse.list_sync import DEFAULT_ACCOUNT, AudiencePlan, mark_stale

__all__ = ["ActivationRefused", "ListPlan", "ListSyncConfig", "ListSyncResult", "ListSyncSettings",
           "build_list_sync_asset", "list_sync_description", "run_list_sync"]

MAX_RELATIONSHIP_BATCH = 1_000


@dataclass(frozen=True)
class _Target:
    """Which rows of the audience are one target list's: those whose list columns give ``key`` (None: the
    table has no list columns, every row is the fixed list's)."""

    key: str | None


class ListSyncConfig(Config):
    """Run config of ``klaviyo/list_membership_sync``."""

    dry_run: bool = Field(default=False, description="Plan and report; change nothing in Klaviyo.")
    max_remove_share: float = Field(default=0.2, description="Largest share of a list one run may remove.")
    allow_large_removal: bool = Field(default=False, description="Skip the removal-share guard for this run.")
    allow_empty_audience: bool = Field(default=False, description="Allow an empty audience (empties the list).")
    max_wait_s: float = Field(default=900.0, description="Longest wait for one import job to finish.")
    unknown_outcome_wait_s: float = Field(
        default=UNKNOWN_WAIT_S,
        description="After an import job POST whose answer was lost: how long a job may still appear at "
        "Klaviyo before its rows are sent again (adopted, not resent, when found).",
    )


class ListSyncSettings(ListSyncConfig):
    """Where the audience is (the factory's arguments) and how to sync it: the run options are
    `ListSyncConfig`'s, defined once there; a run's settings are the factory's arguments plus its run config."""

    table: str
    columns: ProfileColumns = Field(default_factory=lambda: ProfileColumns(profile_id="profile_id"))
    list_id_column: str = "list_id"
    list_name_column: str = "list_name"
    list_id: str | None = None
    list_name: str | None = None
    known_profiles_table: str | None = "klaviyo.profiles_current"
    account: str = DEFAULT_ACCOUNT  # whose lists the registry records (the key prefix of a second account)


@dataclass
class ListPlan:
    """What one list needs and what was done."""

    list_id: str | None
    list_name: str | None
    created: bool = False
    members_before: int = 0
    audience: int = 0
    kept: int = 0
    adds: int = 0
    removes: int = 0
    imports: int = 0
    import_failed: int = 0
    import_pending: int = 0
    rejected: int = 0
    add_failed: int = 0
    remove_failed: int = 0
    stale_ids: int = 0
    isolation_calls: int = 0
    missing: int = 0  # after the run: audience rows that are not members
    extra: int = 0  # after the run: members matched by no audience row
    verified: bool = False
    job_ids: list[str] = field(default_factory=list)

    @property
    def difference(self) -> int:
        return self.missing + self.extra

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "difference": self.difference}


@dataclass
class ListSyncResult:
    """Totals over all target lists of one run."""

    run_id: str
    dry_run: bool
    lists: list[ListPlan] = field(default_factory=list)
    duration_s: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(p, name) for p in self.lists)

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dry_run": self.dry_run, "lists": len(self.lists)}
        for name in ("audience", "kept", "adds", "removes", "imports", "import_failed", "import_pending", "rejected",
                     "add_failed", "remove_failed", "stale_ids", "isolation_calls", "missing", "extra", "difference"):
            out[name] = self.total(name)
        out["verified"] = all(p.verified for p in self.lists)
        out["sent"] = out["adds"] + out["removes"] + out["imports"]
        out["unchanged"] = out["kept"]
        out["failed"] = out["import_failed"]
        out["job_ids"] = MetadataValue.json([j for p in self.lists for j in p.job_ids])
        out["plan"] = MetadataValue.json([p.as_dict() for p in self.lists])
        out["duration_s"] = round(self.duration_s, 3)
        return out


class _ListRun:
    """Plans and applies one run over every target list of the audience table."""

    def __init__(self, client: Any, warehouse: Any, settings: ListSyncSettings, run_id: str, log: Any) -> None:
        self.client, self.warehouse, self.settings, self.log = client, warehouse, settings, log
        self.result = ListSyncResult(run_id=run_id, dry_run=settings.dry_run)
        self.available = table_columns(warehouse, settings.table)
        self.ids = settings.columns.identifier_columns(self.available)
        if not self.ids:
            raise ValueError(
                f"audience table {settings.table!r} has no member identifier column "
                f"(looked for {settings.columns.email}, {settings.columns.phone_number}, "
                f"{settings.columns.external_id}, {settings.columns.profile_id})"
            )
        c = settings.columns
        self.audience = AudiencePlan(
            table=settings.table, available=self.available, email=c.email, phone_number=c.phone_number,
            external_id=c.external_id, profile_id=c.profile_id, list_id_column=settings.list_id_column,
            list_name_column=settings.list_name_column, known_profiles_table=settings.known_profiles_table)

    def targets(self) -> list[tuple[str | None, str | None, int]]:
        """(list_id, list_name, audience rows) for every target."""
        s = self.settings
        if not self.audience.has_list_columns:
            if not (s.list_id or s.list_name):
                raise ValueError(
                    f"audience table {s.table!r} has no {s.list_id_column!r} or {s.list_name_column!r} column; "
                    "add one or set list_id / list_name in the list sync settings"
                )
            return [(s.list_id, s.list_name, self.audience.rows(self.warehouse))]
        out = self.audience.targets(self.warehouse)
        if any(lid is None and name is None for lid, name, _ in out):
            raise ValueError(f"some rows of {s.table!r} name no list: fill {s.list_id_column} or {s.list_name_column}")
        if not out and (s.list_id or s.list_name):
            out = [(s.list_id, s.list_name, 0)]
        return out

    # -- run ---------------------------------------------------------------------------------------
    def execute(self) -> ListSyncResult:
        started = time.monotonic()
        s = self.settings
        state.ensure_tables(self.warehouse)
        targets = self.targets()
        if sum(n for _, _, n in targets) == 0 and not s.allow_empty_audience:
            raise ActivationRefused(
                f"audience table {s.table!r} is empty: refusing to empty "
                f"{'list ' + repr(s.list_id or s.list_name) if (s.list_id or s.list_name) else 'its lists'}. "
                "If that is really intended, run with allow_empty_audience=True"
            )
        plans = [self._plan_list(list_id, list_name) for list_id, list_name, _ in targets]
        self.result.lists = [p for p, _ in plans]
        self._guard()
        if not s.dry_run:
            for plan, target in plans:
                self._apply(plan, target)
        self.result.duration_s = time.monotonic() - started
        self._log_summary()
        return self.result

    def _log_summary(self) -> None:
        """One line per run: what was read, what was already right (and why), what was sent."""
        r, s = self.result, self.settings
        audience, kept = r.total("audience"), r.total("kept")
        adds, removes, imports = r.total("adds"), r.total("removes"), r.total("imports")
        verb = "would send (dry run)" if s.dry_run else "sent"
        why = "already members in Klaviyo, left alone" if kept else "none were already members"
        if not (adds or removes or imports):
            tail = "nothing to send: Klaviyo's membership already equals the audience"
        else:
            tail = (f"{verb} {adds} adds, {removes} removes, {imports} imports of unknown people"
                    + (f" ({r.total('import_failed')} failed, {r.total('rejected')} rejected)"
                       if r.total("import_failed") or r.total("rejected") else ""))
        self.log.info(f"read {audience} audience rows from {s.table} for {len(r.lists)} list(s); "
                      f"{kept} unchanged ({why}); {tail}")

    def _target(self, list_id: str | None, list_name: str | None) -> _Target:
        if self.audience.has_list_columns:
            return _Target(f"id:{list_id}" if list_id else f"name:{list_name}")
        return _Target(None)

    def _query_params(self, plan: ListPlan, target: _Target) -> dict[str, Any]:
        return AudiencePlan.params(self.result.run_id, plan.list_id, target.key)

    def _plan_list(self, list_id: str | None, list_name: str | None) -> tuple[ListPlan, _Target]:
        s = self.settings
        resolved, created = resolve_list(self.client, self.warehouse, list_id, list_name, dry_run=s.dry_run,
                                         run_id=self.result.run_id, log=self.log, account=s.account)
        plan = ListPlan(list_id=resolved, list_name=list_name, created=created)
        if resolved:
            plan.members_before = snapshot_members(self.client, self.warehouse, resolved, self.result.run_id)
        target = self._target(list_id, list_name)
        counts = self.audience.counts(self.warehouse, self._query_params(plan, target))
        plan.audience, plan.kept, plan.adds, plan.removes = counts.audience, counts.kept, counts.adds, counts.removes
        plan.imports, plan.rejected = counts.imports, counts.unimportable
        self.log.info(
            f"list {list_name or resolved!r} ({resolved or 'to be created'}): {plan.members_before} members, "
            f"{plan.kept} kept, {plan.adds} to add, {plan.imports} to import, {plan.removes} to remove"
        )
        return plan, target

    def _guard(self) -> None:
        s = self.settings
        for plan in self.result.lists:
            if plan.members_before and not s.allow_large_removal:
                share = plan.removes / plan.members_before
                if share > s.max_remove_share:
                    message = (
                        f"list {plan.list_name or plan.list_id!r} ({plan.list_id}): the audience would remove "
                        f"{plan.removes} of {plan.members_before} members ({share:.0%}), over the "
                        f"{s.max_remove_share:.0%} limit of one run; nothing was changed. Check the audience table, "
                        "or run with allow_large_removal=True (or raise max_remove_share) if this is intended"
                    )
                    if s.dry_run:
                        self.log.warning("dry run: " + message)
                    else:
                        raise ActivationRefused(message)

    def _apply(self, plan: ListPlan, target: _Target) -> None:
        """Send the plan, then read the list back; ids that did not take are re-routed once; verify."""
        params = self._query_params(plan, target)
        self._failed: set[str] = set()
        self._rejected: set[str] = set()
        plan.imports = 0
        if self._resume(plan):  # jobs of an earlier run finished: their rows may be members now
            snapshot_members(self.client, self.warehouse, str(plan.list_id), self.result.run_id)
        self._send(plan, target, params)
        if self._verify(plan, target, params):  # planned adds not members now: Klaviyo refused or ignored them
            stale = self.audience.add_ids(self.warehouse, params)
            plan.stale_ids += len(stale)
            self.log.warning(f"list {plan.list_id}: {len(stale)} profile ids did not become members (Klaviyo "
                             "refused or ignored them: merged or deleted profiles); importing their rows by "
                             "identifiers instead")
            mark_stale(self.warehouse, self.result.run_id, stale)
            self._send(plan, target, params)
            self._verify(plan, target, params)
        if plan.difference:
            self.log.warning(f"list {plan.list_name or plan.list_id!r} ({plan.list_id}) differs from the audience "
                             f"after the sync: {plan.missing} audience rows are not members, {plan.extra} members "
                             f"are not in the audience; see {state.LIST_LOG}")

    def _verify(self, plan: ListPlan, target: _Target, params: dict[str, Any]) -> int:
        """Read the members back and count what still differs from the audience (rows recorded rejected or
        failed with a reason are not counted as missing); returns the planned adds that did not take."""
        snapshot_members(self.client, self.warehouse, str(plan.list_id), self.result.run_id)
        counts = self.audience.verify(self.warehouse, params)
        plan.missing = max(0, counts.missing - plan.rejected - len(self._failed))
        plan.extra, plan.verified = counts.removes, True
        return counts.adds

    def _resume(self, plan: ListPlan) -> int:
        """Record the outcome of import jobs an earlier run left open for this list (rows not resent);
        returns how many there were."""
        n = 0
        for job_id, items, outcome in resume_open_jobs(self.client, self.warehouse, f"list:{plan.list_id}",
                                                       self.settings.max_wait_s, log=self.log,
                                                       unknown_wait_s=self.settings.unknown_outcome_wait_s):
            self._record_job(plan, job_id, items, outcome)
            n += 1
        return n

    def _send(self, plan: ListPlan, target: _Target, params: dict[str, Any]) -> None:
        rid, lid, lname = self.result.run_id, plan.list_id, plan.list_name
        self._import(plan, params)
        path = f"/api/lists/{lid}/relationships/profiles"
        for action, cte, call in (("add", "adds", self.client.post), ("remove", "removes", self.client.delete)):
            def send(ids: list[str], call: Any = call) -> None:
                call(path, {"data": [{"type": "profile", "id": i} for i in ids]})

            for chunk in self.audience.id_chunks(self.warehouse, params, cte, MAX_RELATIONSHIP_BATCH):
                for start in range(0, len(chunk), MAX_RELATIONSHIP_BATCH):
                    ids = [str(i) for i in chunk["id"].iloc[start:start + MAX_RELATIONSHIP_BATCH]]
                    isolation = send_isolating(send, ids, RELATIONSHIP_ROW_POINTER)
                    plan.isolation_calls += isolation.extra_calls
                    now = state.now_utc()
                    rows = [(rid, lid, lname, action, i, None, None, now) for part, _ in isolation.accepted
                            for i in part]
                    rows += [(rid, lid, lname, f"{action}_failed", i, reason, None, now)
                             for i, reason in isolation.rejected]
                    if action == "add":
                        plan.add_failed += len(isolation.rejected)
                    else:
                        plan.remove_failed += len(isolation.rejected)
                    state.record_list_changes(self.warehouse, rows)

    def _import(self, plan: ListPlan, params: dict[str, Any]) -> None:
        rid, lid, lname = self.result.run_id, plan.list_id, plan.list_name
        sync = f"list:{lid}"
        inflight = {i.identity for job_id, _ in state.open_jobs(self.warehouse, sync)
                    for i in ledger_items(self.warehouse, job_id)}
        packer = JobPacker(list_id=lid)
        batches = []
        rejects = []
        for chunk in self.audience.import_chunks(self.warehouse, params):
            for row in chunk.to_dict("records"):
                stale_id = row.pop("profile_id", None)
                attrs = {k: v for k, v in row.items() if isinstance(v, str) and v}
                identity = next((f"{k}:{v}" for k, v in attrs.items()), f"id:{stale_id}")
                if identity in inflight or identity in self._failed or identity in self._rejected:
                    continue  # in a job still running at Klaviyo (not sent twice), or refused in this run
                profile = {"type": "profile", "attributes": attrs}
                reason = (f"profile id {stale_id} is not in Klaviyo (merged or deleted) and the row has no "
                          "email, phone number or external id to import it by") if not attrs and stale_id else (
                    profile_problem(profile, 0))  # identifiers only: far below the size limit
                if reason:
                    self._rejected.add(identity)
                    rejects.append((rid, lid, lname, "rejected", stale_id, f"{identity} ({reason})", None,
                                    state.now_utc()))
                    continue
                full = packer.add(PackedProfile(identity, "", profile, len(orjson.dumps(profile))))
                if full:
                    batches.append(full)
        last = packer.flush()
        if last:
            batches.append(last)
        plan.rejected = len(self._rejected)
        plan.imports += sum(len(b.items) for b in batches)
        state.record_list_changes(self.warehouse, rejects)
        for batch in batches:
            isolation = submit_tracked(self.client, self.warehouse, sync, rid, batch.items, list_id=lid, log=self.log,
                                       unknown_wait_s=self.settings.unknown_outcome_wait_s)
            plan.isolation_calls += isolation.extra_calls
            now = state.now_utc()
            state.record_list_changes(self.warehouse, [
                (rid, lid, lname, "import_failed", None, f"{i.identity} ({reason})", None, now)
                for i, reason in isolation.rejected])
            plan.import_failed += len(isolation.rejected)
            self._failed.update(i.identity for i, _ in isolation.rejected)
            for items, job_id in isolation.accepted:
                plan.job_ids.append(job_id)
                self._record_job(plan, job_id, items,
                                 poll_job(self.client, self.warehouse, job_id, max_wait_s=self.settings.max_wait_s))

    def _record_job(self, plan: ListPlan, job_id: str, items: list[PackedProfile], outcome: Any) -> None:
        rid, lid, lname = self.result.run_id, plan.list_id, plan.list_name
        now = state.now_utc()
        if outcome is not None and outcome.status == "timeout":
            plan.import_pending += len(items)
            state.record_list_changes(self.warehouse, [
                (rid, lid, lname, "import_pending", None, i.identity, job_id, now) for i in items])
            return  # stays open in the ledger: polled next run
        if outcome is None:
            verdict_failed = {i.identity: "job vanished at Klaviyo" for i in items}
            imported: list[str] = []
            pending: dict[str, str] = {}
        else:
            verdict = job_verdict(self.client, outcome, items)
            verdict_failed, imported, pending = verdict.failed, verdict.imported, verdict.pending
        plan.import_failed += len(verdict_failed)
        self._failed.update(verdict_failed)
        plan.import_pending += len(pending)
        rows = [(rid, lid, lname, "import", None, i, job_id, now) for i in imported]
        rows += [(rid, lid, lname, "import_failed", None, f"{i} ({r})", job_id, now) for i, r in verdict_failed.items()]
        rows += [(rid, lid, lname, "import_pending", None, f"{i} ({r})", job_id, now) for i, r in pending.items()]
        state.record_list_changes(self.warehouse, rows)
        state.close_job(self.warehouse, job_id, outcome.status if outcome is not None else "vanished")


def run_list_sync(client: Any, warehouse: Any, settings: ListSyncSettings,
                  run_id: str | None = None, log: logging.Logger | Any = None) -> ListSyncResult:
    """Converge every target list of ``settings.table`` to exactly its audience; returns the plan and counts."""
    return _ListRun(client, warehouse, settings, run_id or uuid.uuid4().hex,
                    log or logging.getLogger(__name__)).execute()


def list_sync_description(audience_table: str) -> str:
    """What ``klaviyo/list_membership_sync`` does, for its asset description."""
    return (f"Makes Klaviyo list membership equal the audience in `{audience_table}` "
            f"(adds, removes, imports of unknown people); changes in {state.LIST_LOG}.")


def build_list_sync_asset(
    audience_table: str,
    columns: ProfileColumns | None = None,
    list_id: str | None = None,
    list_name: str | None = None,
    known_profiles_table: str | None = "klaviyo.profiles_current",
    key: str = "klaviyo/list_membership_sync",
    target: ActivationTarget | None = None,
    account: str = DEFAULT_ACCOUNT,
) -> AssetsDefinition:
    """The ``klaviyo/list_membership_sync`` asset reading ``audience_table`` (resources ``klaviyo``,
    ``warehouse``, or those of ``target``); ``account`` keys the lists it creates in the registry (the
    translator's key prefix when two accounts share a warehouse)."""
    columns = columns or ProfileColumns(profile_id="profile_id")
    check_table_name(audience_table, "audience_table")

    def run(client: Any, warehouse: Any, config: ListSyncConfig, context: AssetExecutionContext) -> ListSyncResult:
        settings = ListSyncSettings(
            table=audience_table, columns=columns, list_id=list_id, list_name=list_name,
            known_profiles_table=known_profiles_table, account=account, **config.model_dump(),
        )
        return run_list_sync(client, warehouse, settings, context.run.run_id, context.log)

    return build_activation_run_asset(key, audience_table, list_sync_description(audience_table), target,
                                      ListSyncConfig, run, checks=[(LIST_CHECK, LIST_CHECK_DESCRIPTION)],
                                      check_results=lambda result: [list_check_result(result)])


LIST_CHECK = "list_matches_audience"
LIST_CHECK_DESCRIPTION = ("After the sync the list is read back from Klaviyo: every audience row that can be a member "
                          "is one, and no member is outside the audience (difference 0).")


def list_check_result(result: ListSyncResult) -> AssetCheckResult:
    """The ``list_matches_audience`` check of one run (a dry run changes nothing and is not judged)."""
    difference = result.total("difference")
    meta = {"difference": difference, "missing": result.total("missing"), "extra": result.total("extra"),
            "dry_run": result.dry_run}
    if result.dry_run:
        return AssetCheckResult(check_name=LIST_CHECK, passed=True, metadata=meta,
                                description="dry run: nothing was sent, the list was not verified")
    return AssetCheckResult(check_name=LIST_CHECK, passed=difference == 0, metadata=meta,
                            description=None if difference == 0 else
                            f"{result.total('missing')} audience rows are not members and {result.total('extra')} "
                            f"members are not in the audience after the sync; see {state.LIST_LOG}")
