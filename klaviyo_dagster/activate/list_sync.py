"""The ``klaviyo/list_membership_sync`` asset: make Klaviyo lists hold exactly an audience table's people.

Per target list (:func:`run_list_sync`, plain Python; :func:`build_list_sync_asset` wraps it):
1. resolve the list (lists.py): explicit id, else exact name (our registry first, then ``equals(name,...)``),
   else create it and record it at once, so retries never make a second list;
2. read the list's members (id + identifiers) from Klaviyo page by page into a warehouse snapshot;
3. plan in DuckDB: audience rows matched to a member are kept; rows resolvable to a known profile id
   (explicit, ingested ``profiles_current``) are added; the rest are imported through a bulk import
   job carrying ``relationships.lists``; members matched by no row are removed;
4. guards (empty audience, removal share) run before any write; dry run stops after planning;
5. adds and removes go in batches of at most 1,000 ids; every change is logged.
"""


import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue
from pydantic import Field

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.inputs import (
    ActivationTarget,
    activation_asset,
    quote_ident,
    quote_table,
    table_columns,
)
from klaviyo_dagster.activate.jobs import (
    JobPacker,
    PackedProfile,
    failed_identities,
    import_errors,
    submit_job,
    wait_for_job,
)
from klaviyo_dagster.activate.lists import resolve_list, snapshot_members
from klaviyo_dagster.activate.render import ProfileColumns
from klaviyo_dagster.activate.validate import profile_problem

MAX_RELATIONSHIP_BATCH = 1_000


@dataclass(frozen=True)
class _Target:
    """How to select one target list's rows: a SQL filter and the value of its ``$target`` parameter."""

    filter: str
    key: str | None


class ActivationRefused(Exception):
    """A safety guard stopped the sync before any write (the message says which and how to override)."""


class ListSyncConfig(Config):
    """Run config of ``klaviyo/list_membership_sync``."""

    dry_run: bool = Field(default=False, description="Plan and report; change nothing in Klaviyo.")
    max_remove_share: float = Field(default=0.2, description="Largest share of a list one run may remove.")
    allow_large_removal: bool = Field(default=False, description="Skip the removal-share guard for this run.")
    allow_empty_audience: bool = Field(default=False, description="Allow an empty audience (empties the list).")
    max_wait_s: float = Field(default=900.0, description="Longest wait for one import job to finish.")


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
    rejected: int = 0
    job_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        for name in ("audience", "kept", "adds", "removes", "imports", "import_failed", "rejected"):
            out[name] = self.total(name)
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

    # -- SQL pieces -----------------------------------------------------------------------------
    def _col(self, name: str | None) -> str:
        if name and name in self.available:
            return f"nullif(trim(CAST(a.{quote_ident(name)} AS VARCHAR)), '')"
        return "NULL::VARCHAR"

    def _target_expr(self) -> str:
        s = self.settings
        lid, lname = self._col(s.list_id_column), self._col(s.list_name_column)
        fixed = f"'id:' || {lid}" if lid != "NULL::VARCHAR" else "NULL"
        return f"coalesce({fixed}, 'name:' || {lname})"

    def targets(self) -> list[tuple[str | None, str | None, int]]:
        """(list_id, list_name, audience rows) for every target."""
        s = self.settings
        has_list_cols = s.list_id_column in self.available or s.list_name_column in self.available
        table = quote_table(s.table)
        if not has_list_cols:
            if not (s.list_id or s.list_name):
                raise ValueError(
                    f"audience table {s.table!r} has no {s.list_id_column!r} or {s.list_name_column!r} column; "
                    "add one or set list_id / list_name in the list sync settings"
                )
            n = self.warehouse.query(f"SELECT count(*) FROM {table}")[0][0]
            return [(s.list_id, s.list_name, int(n))]
        rows = self.warehouse.query(
            f"SELECT any_value({self._col(s.list_id_column)}), any_value({self._col(s.list_name_column)}), "
            f"count(*) FROM {table} a GROUP BY {self._target_expr()} ORDER BY 1, 2"
        )
        out = [(r[0], r[1], int(r[2])) for r in rows]
        if any(lid is None and name is None for lid, name, _ in out):
            raise ValueError(f"some rows of {s.table!r} name no list: fill {s.list_id_column} or {s.list_name_column}")
        if not out and (s.list_id or s.list_name):
            out = [(s.list_id, s.list_name, 0)]
        return out

    def _plan_ctes(self, target_filter: str) -> str:
        c = self.settings.columns
        email = f"lower({self._col(c.email)})"
        pid, phone, xid = self._col(c.profile_id), self._col(c.phone_number), self._col(c.external_id)
        known = self.settings.known_profiles_table
        if known and self.warehouse.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = ?", [known]
        )[0][0]:
            k = quote_table(known)
            lookups = (
                f"ke AS (SELECT lower(email) AS k, min(id) AS id FROM {k} WHERE email IS NOT NULL GROUP BY 1), "
                f"kp AS (SELECT phone_number AS k, min(id) AS id FROM {k} WHERE phone_number IS NOT NULL GROUP BY 1), "
                f"kx AS (SELECT CAST(external_id AS VARCHAR) AS k, min(id) AS id FROM {k} "
                "WHERE external_id IS NOT NULL GROUP BY 1), "
            )
        else:
            lookups = "".join(f"{n} AS (SELECT NULL::VARCHAR AS k, NULL::VARCHAR AS id WHERE false), "
                              for n in ("ke", "kp", "kx"))
        members = f"(SELECT * FROM {state.LIST_MEMBERS} WHERE run_id = $run AND list_id = $list)"
        return (
            f"WITH aud AS (SELECT DISTINCT {pid} AS profile_id, {email} AS email, {phone} AS phone_number, "
            f"{xid} AS external_id FROM {quote_table(self.settings.table)} a WHERE {target_filter}), "
            + lookups +
            f"m AS {members}, "
            "me AS (SELECT lower(email) AS k, min(profile_id) AS id FROM m WHERE email IS NOT NULL GROUP BY 1), "
            "mp AS (SELECT phone_number AS k, min(profile_id) AS id FROM m WHERE phone_number IS NOT NULL GROUP BY 1), "
            "mx AS (SELECT external_id AS k, min(profile_id) AS id FROM m WHERE external_id IS NOT NULL GROUP BY 1), "
            "resolved AS (SELECT aud.*, coalesce(aud.profile_id, ke.id, kp.id, kx.id) AS resolved_id "
            "FROM aud LEFT JOIN ke ON ke.k = aud.email LEFT JOIN kp ON kp.k = aud.phone_number "
            "LEFT JOIN kx ON kx.k = aud.external_id), "
            "planned AS (SELECT r.*, coalesce(mi.profile_id, me.id, mp.id, mx.id) AS member_id FROM resolved r "
            "LEFT JOIN (SELECT DISTINCT profile_id FROM m) mi ON mi.profile_id = r.resolved_id "
            "LEFT JOIN me ON me.k = r.email LEFT JOIN mp ON mp.k = r.phone_number "
            "LEFT JOIN mx ON mx.k = r.external_id), "
            "kept AS (SELECT DISTINCT member_id AS id FROM planned WHERE member_id IS NOT NULL), "
            "adds AS (SELECT DISTINCT resolved_id AS id FROM planned WHERE member_id IS NULL AND resolved_id IS NOT NULL), "
            "imports AS (SELECT DISTINCT email, phone_number, external_id FROM planned "
            "WHERE member_id IS NULL AND resolved_id IS NULL), "
            "removes AS (SELECT DISTINCT profile_id AS id FROM m WHERE profile_id NOT IN (SELECT id FROM kept)) "
        )

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
        s = self.settings
        if s.list_id_column in self.available or s.list_name_column in self.available:
            key = f"id:{list_id}" if list_id else f"name:{list_name}"
            return _Target(f"{self._target_expr()} = $target", key)
        return _Target("true", None)

    def _query_params(self, plan: ListPlan, target: _Target) -> dict[str, Any]:
        params: dict[str, Any] = {"run": self.result.run_id, "list": plan.list_id or ""}
        if target.key is not None:
            params["target"] = target.key
        return params

    def _plan_list(self, list_id: str | None, list_name: str | None) -> tuple[ListPlan, _Target]:
        s = self.settings
        resolved, created = resolve_list(self.client, self.warehouse, list_id, list_name,
                                         dry_run=s.dry_run, run_id=self.result.run_id, log=self.log)
        plan = ListPlan(list_id=resolved, list_name=list_name, created=created)
        if resolved:
            plan.members_before = snapshot_members(self.client, self.warehouse, resolved, self.result.run_id)
        target = self._target(list_id, list_name)
        identified = "coalesce(email, phone_number, external_id) IS NOT NULL"
        row = self.warehouse.query(
            self._plan_ctes(target.filter)
            + "SELECT (SELECT count(*) FROM aud), (SELECT count(*) FROM kept), (SELECT count(*) FROM adds), "
            f"(SELECT count(*) FROM removes), (SELECT count(*) FROM imports WHERE {identified}), "
            f"(SELECT count(*) FROM imports WHERE NOT ({identified}))",
            self._query_params(plan, target),
        )[0]
        plan.audience, plan.kept, plan.adds, plan.removes, plan.imports, plan.rejected = map(int, row)
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
        ctes = self._plan_ctes(target.filter)
        params = self._query_params(plan, target)
        rid, lid, lname = self.result.run_id, plan.list_id, plan.list_name
        if plan.imports or plan.rejected:
            self._import(plan, ctes, params)
        path = f"/api/lists/{lid}/relationships/profiles"
        for action, cte, send in (("add", "adds", self.client.post), ("remove", "removes", self.client.delete)):
            for chunk in self.warehouse.read_chunks(ctes + f"SELECT id FROM {cte} ORDER BY id", params,
                                                    chunk_rows=MAX_RELATIONSHIP_BATCH):
                for start in range(0, len(chunk), MAX_RELATIONSHIP_BATCH):
                    ids = [str(i) for i in chunk["id"].iloc[start:start + MAX_RELATIONSHIP_BATCH]]
                    send(path, {"data": [{"type": "profile", "id": i} for i in ids]})
                    now = state.now_utc()
                    state.record_list_changes(self.warehouse, [(rid, lid, lname, action, i, None, None, now)
                                                               for i in ids])

    def _import(self, plan: ListPlan, ctes: str, params: dict[str, Any]) -> None:
        rid, lid, lname = self.result.run_id, plan.list_id, plan.list_name
        packer = JobPacker(list_id=lid)
        batches = []
        rejects = []
        for chunk in self.warehouse.read_chunks(ctes + "SELECT * FROM imports", params):
            for row in chunk.to_dict("records"):
                attrs = {k: v for k, v in row.items() if isinstance(v, str) and v}
                identity = next((f"{k}:{v}" for k, v in attrs.items()), "none")
                profile = {"type": "profile", "attributes": attrs}
                reason = profile_problem(profile, 0)  # identifiers only: far below the size limit
                if reason:
                    rejects.append((rid, lid, lname, "rejected", None, f"{identity} ({reason})", None,
                                    state.now_utc()))
                    continue
                full = packer.add(PackedProfile(identity, "", profile, len(orjson.dumps(profile))))
                if full:
                    batches.append(full)
        last = packer.flush()
        if last:
            batches.append(last)
        plan.rejected = len(rejects)
        plan.imports = sum(len(b.items) for b in batches)
        state.record_list_changes(self.warehouse, rejects)
        for batch in batches:
            job_id = submit_job(self.client, [i.profile for i in batch.items], list_id=lid)
            plan.job_ids.append(job_id)
            outcome = wait_for_job(self.client, job_id, max_wait_s=self.settings.max_wait_s)
            failed: dict[str, str] = {}
            if outcome.status == "complete" and outcome.failed_count:
                failed, _ = failed_identities(import_errors(self.client, job_id), batch.items)
            elif outcome.status != "complete":
                failed = {i.identity: f"job {outcome.status}" for i in batch.items}
            plan.import_failed += len(failed)
            now = state.now_utc()
            state.record_list_changes(self.warehouse, [
                (rid, lid, lname, "import_failed" if i.identity in failed else "import", None,
                 i.identity if i.identity not in failed else f"{i.identity} ({failed[i.identity]})", job_id, now)
                for i in batch.items
            ])


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
) -> Any:
    """The ``klaviyo/list_membership_sync`` asset reading ``audience_table`` (resources ``klaviyo``,
    ``warehouse``, or those of ``target``)."""
    columns = columns or ProfileColumns(profile_id="profile_id")
    target = target or ActivationTarget()

    @activation_asset(key, audience_table, list_sync_description(audience_table), target)
    def list_membership_sync(context: AssetExecutionContext, config: ListSyncConfig) -> MaterializeResult:
        settings = ListSyncSettings(
            table=audience_table, columns=columns, list_id=list_id, list_name=list_name,
            known_profiles_table=known_profiles_table, **config.model_dump(),
        )
        klaviyo, warehouse_resource = target.resources(context)
        warehouse = warehouse_resource.get_warehouse()
        with klaviyo.get_client() as client:
            try:
                result = run_list_sync(client, warehouse, settings, context.run.run_id, context.log)
            except ActivationRefused as exc:
                raise Failure(description=str(exc), allow_retries=False) from exc
        return MaterializeResult(metadata=result.metadata())

    return list_membership_sync
