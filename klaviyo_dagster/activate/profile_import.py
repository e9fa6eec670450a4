"""The ``klaviyo/profile_import`` asset: send new and changed profile rows to Klaviyo, record outcomes.

Flow (:func:`run_profile_import`, plain Python; :func:`build_profile_import_asset` wraps it):
1. one DuckDB query hashes every input row, dedupes identities and anti-joins the state table, so
   only new or changed rows ever leave the warehouse, chunk by chunk;
2. each row is rendered and validated; rejects are logged with their reason;
3. valid profiles are packed into jobs (<= 10,000 profiles, <= 5 MB), submitted, and a bounded number
   of jobs stay in flight; each is polled to its real outcome and its import errors are matched back
   to rows; the log gets one outcome per row and the state advances only for accepted rows.
"""


import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
)
from pydantic import Field

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.inputs import (
    ActivationTarget,
    activation_asset,
    quote_ident,
    quote_table,
    sql_string,
    table_columns,
)
from klaviyo_dagster.activate.jobs import (
    MAX_JOB_BYTES,
    MAX_JOB_PROFILES,
    JobBatch,
    JobPacker,
    PackedProfile,
    failed_identities,
    import_errors,
    submit_job,
    wait_for_job,
)
from klaviyo_dagster.activate.render import (
    ProfileColumns,
    RenderPlan,
    build_render_plan,
    frame_rows,
    render_profile,
)
from klaviyo_dagster.activate.validate import profile_problem, size_problem

# Bump when rendering changes meaning, so every row is resent once.
HASH_VERSION = "1"
IDENTITY_PREFIX = {"external_id": "external_id:", "email": "email:", "phone_number": "phone:", "id": "id:"}


class ProfileImportConfig(Config):
    """Run config of ``klaviyo/profile_import``."""

    dry_run: bool = Field(default=False, description="Plan and report; send nothing, write no state.")
    full_resync: bool = Field(default=False, description="Ignore the state table and send every valid row.")
    max_job_profiles: int = Field(default=MAX_JOB_PROFILES, description="Profiles per job (Klaviyo cap 10,000).")
    max_job_bytes: int = Field(default=MAX_JOB_BYTES, description="Body bytes per job (Klaviyo cap 5 MB).")
    max_jobs_in_flight: int = Field(default=4, description="Jobs submitted before the oldest is awaited.")
    max_wait_s: float = Field(default=900.0, description="Longest wait for one job to finish.")
    prevalidate: bool = Field(
        default=True,
        description="Check emails, E.164 phones and identifiers before sending (rejects cost no API call). "
        "Off: only the size limit is checked and Klaviyo's verdict (failed rows) is recorded.",
    )


class ProfileImportSettings(ProfileImportConfig):
    """What to import (the factory's arguments) and how: the run options are `ProfileImportConfig`'s,
    defined once there; a run's settings are the factory's arguments plus its run config."""

    table: str
    columns: ProfileColumns = Field(default_factory=ProfileColumns)
    sync_name: str = "profile_import"
    chunk_rows: int = 5_000


@dataclass
class ProfileImportResult:
    """Counts and job facts of one run (becomes the materialization metadata)."""

    run_id: str
    dry_run: bool = False
    rows: int = 0
    duplicates: int = 0
    unchanged: int = 0
    sent: int = 0
    imported: int = 0
    failed: int = 0
    rejected: int = 0
    pending: int = 0
    unmatched_errors: int = 0
    job_ids: list[str] = field(default_factory=list)
    job_profiles: list[int] = field(default_factory=list)
    job_bytes: list[int] = field(default_factory=list)
    duration_s: float = 0.0

    def metadata(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "duplicates": self.duplicates,
            "unchanged": self.unchanged,
            "sent": self.sent,
            "imported": self.imported,
            "failed": self.failed,
            "rejected": self.rejected,
            "pending": self.pending,
            "unmatched_errors": self.unmatched_errors,
            "jobs": len(self.job_ids),
            "job_ids": MetadataValue.json(self.job_ids),
            "job_profiles": MetadataValue.json(self.job_profiles),
            "job_bytes": MetadataValue.json(self.job_bytes),
            "duration_s": round(self.duration_s, 3),
        }


def _diff_sql(table: str, plan: RenderPlan, columns: ProfileColumns, available: list[str]) -> str:
    """CTEs ``ided`` (every row with __hash and __identity) and ``dedup`` (one row per identity)."""
    struct = ", ".join(f"{sql_string(c)}: t.{quote_ident(c)}" for c in plan.columns) or "'_': NULL"
    signature = sql_string(HASH_VERSION + plan.signature())
    ids = [
        f"{sql_string(IDENTITY_PREFIX[kind])} || "
        + (f"lower(trim(CAST(t.{quote_ident(col)} AS VARCHAR)))" if kind == "email"
           else f"trim(CAST(t.{quote_ident(col)} AS VARCHAR))")
        for kind, col in columns.identifier_columns(available).items()
    ]
    # An empty string identifier counts as missing.
    ids = [f"CASE WHEN {e} LIKE '%:' THEN NULL ELSE {e} END" for e in ids]
    identity = "coalesce(" + ", ".join([*ids, "'row:' || __hash"]) + ")"
    return (
        f"WITH src AS (SELECT t.*, md5({signature} || CAST(to_json({{{struct}}}) AS VARCHAR)) AS __hash "
        f"FROM {quote_table(table)} t), "
        f"ided AS (SELECT t.*, {identity} AS __identity FROM src t), "
        "dedup AS (SELECT * FROM ided QUALIFY row_number() OVER (PARTITION BY __identity ORDER BY __hash) = 1), "
        f"known AS (SELECT identity, content_hash FROM {state.STATE} WHERE sync_name = ?) "
    )


@dataclass
class _InFlight:
    job_id: str
    batch: JobBatch


class _Run:
    """One profile import run (keeps the moving parts off the public surface)."""

    def __init__(self, client: Any, warehouse: Any, settings: ProfileImportSettings, run_id: str,
                 log: logging.Logger | Any) -> None:
        self.client, self.warehouse, self.settings, self.log = client, warehouse, settings, log
        self.result = ProfileImportResult(run_id=run_id, dry_run=settings.dry_run)
        self.inflight: deque[_InFlight] = deque()

    def execute(self) -> ProfileImportResult:
        s = self.settings
        started = time.monotonic()
        state.ensure_tables(self.warehouse)
        available = table_columns(self.warehouse, s.table)
        plan = build_render_plan(available, s.columns)
        if not s.columns.identifier_columns(available):
            raise ValueError(
                f"profiles table {s.table!r} has none of the identifier columns "
                f"{[c for c in (s.columns.email, s.columns.phone_number, s.columns.external_id, s.columns.profile_id) if c]}; "
                "rename a column or set the column names in the activation settings"
            )
        ctes = _diff_sql(s.table, plan, s.columns, available)
        counts = self.warehouse.query(
            ctes + "SELECT (SELECT count(*) FROM ided), (SELECT count(*) FROM dedup), "
            "(SELECT count(*) FROM dedup d SEMI JOIN known k ON k.identity = d.__identity AND k.content_hash = d.__hash)",
            [s.sync_name],
        )[0]
        r = self.result
        r.rows, r.duplicates = int(counts[0]), int(counts[0]) - int(counts[1])
        r.unchanged = 0 if s.full_resync else int(counts[2])
        if r.duplicates:
            self.log.warning(f"{r.duplicates} rows of {s.table} repeat an identity already present; one row each is used")
        changed = ctes + "SELECT d.* FROM dedup d" + (
            "" if s.full_resync else
            " ANTI JOIN known k ON k.identity = d.__identity AND k.content_hash = d.__hash"
        )
        packer = JobPacker(s.max_job_profiles, s.max_job_bytes)
        for chunk in self.warehouse.read_chunks(changed, [s.sync_name], chunk_rows=s.chunk_rows):
            rejects: list[tuple[str, str, str]] = []
            for row in frame_rows(chunk):
                identity, content_hash = row.pop("__identity"), row.pop("__hash")
                profile = render_profile(row, plan)
                size = len(orjson.dumps(profile))
                reason = (profile_problem(profile, size) if s.prevalidate
                          else size_problem(size))
                if reason:
                    rejects.append((identity, content_hash, reason))
                    continue
                full = packer.add(PackedProfile(identity, content_hash, profile, size))
                if full:
                    self._submit(full)
            self._record_rejects(rejects)
        last = packer.flush()
        if last:
            self._submit(last)
        while self.inflight:
            self._finish(self.inflight.popleft())
        r.duration_s = time.monotonic() - started
        self._log_summary()
        return r

    def _log_summary(self) -> None:
        """One line per run: what was read, what was found unchanged (and why), what was sent."""
        r, s = self.result, self.settings
        unchanged = (f"{r.unchanged} unchanged since the last sync (same content hash as last imported, "
                     f"{state.STATE}; full_resync=True sends them anyway)") if not s.full_resync \
            else "0 skipped as unchanged (full_resync)"
        duplicates = f", {r.duplicates} repeated identities merged" if r.duplicates else ""
        if not r.sent:
            sent = "nothing to send" + (f" ({r.rejected} rejected before sending)" if r.rejected else "")
        elif s.dry_run:
            sent = f"would send {r.sent} profiles in {len(r.job_profiles)} jobs (dry run)"
        else:
            sent = (f"sent {r.sent} profiles in {len(r.job_ids)} jobs: {r.imported} imported, {r.failed} failed, "
                    f"{r.pending} pending, {r.rejected} rejected before sending")
        self.log.info(f"read {r.rows} rows from {s.table}{duplicates}; {unchanged}; {sent}")

    def _record_rejects(self, rejects: list[tuple[str, str, str]]) -> None:
        self.result.rejected += len(rejects)
        if not rejects or self.settings.dry_run:
            return
        now, s = state.now_utc(), self.settings
        state.record_outcomes(
            self.warehouse,
            [(self.result.run_id, s.sync_name, i, "rejected", reason, None, now) for i, _, reason in rejects],
            [(s.sync_name, i, h, "rejected", None, now) for i, h, _ in rejects],
        )

    def _submit(self, batch: JobBatch) -> None:
        r = self.result
        r.sent += len(batch.items)
        r.job_profiles.append(len(batch.items))
        r.job_bytes.append(batch.body_bytes)
        if self.settings.dry_run:
            return
        job_id = submit_job(self.client, [item.profile for item in batch.items])
        r.job_ids.append(job_id)
        self.log.info(f"submitted profile import job {job_id}: {len(batch.items)} profiles, {batch.body_bytes} bytes")
        self.inflight.append(_InFlight(job_id, batch))
        while len(self.inflight) >= max(1, self.settings.max_jobs_in_flight):
            self._finish(self.inflight.popleft())

    def _finish(self, job: _InFlight) -> None:
        s, r = self.settings, self.result
        outcome = wait_for_job(self.client, job.job_id, max_wait_s=s.max_wait_s)
        failed: dict[str, str] = {}
        unmatched: list[str] = []
        if outcome.status == "complete" and (outcome.failed_count or "failed_count" not in outcome.attributes):
            failed, unmatched = failed_identities(import_errors(self.client, job.job_id), job.batch.items)
        if outcome.status == "cancelled":
            failed = {item.identity: "job was cancelled by Klaviyo; will be sent again next run"
                      for item in job.batch.items}
        now = state.now_utc()
        log_rows, state_rows = [], []
        for item in job.batch.items:
            if outcome.status == "timeout":
                outcome_name = "pending"
                reason = (f"job still {outcome.attributes.get('status', 'unknown')} after {outcome.waited_s:.0f} s; "
                          "will be sent again next run")
            elif item.identity in failed:
                outcome_name, reason = "failed", failed[item.identity]
            else:
                outcome_name, reason = "imported", None
                state_rows.append((s.sync_name, item.identity, item.content_hash, "imported", job.job_id, now))
            log_rows.append((r.run_id, s.sync_name, item.identity, outcome_name, reason, job.job_id, now))
        for reason in unmatched:
            log_rows.append((r.run_id, s.sync_name, None, "failed", f"unmatched import error: {reason}", job.job_id, now))
        state.record_outcomes(self.warehouse, log_rows, state_rows)
        n_failed = sum(1 for row in log_rows if row[3] == "failed" and row[2] is not None)
        n_pending = sum(1 for row in log_rows if row[3] == "pending")
        r.failed += n_failed
        r.pending += n_pending
        r.imported += len(state_rows)
        r.unmatched_errors += len(unmatched)
        if unmatched:
            self.log.warning(f"job {job.job_id}: {len(unmatched)} import errors matched no row: {unmatched[:3]}")
        self.log.info(f"job {job.job_id} {outcome.status}: {len(state_rows)} imported, {n_failed} failed, "
                      f"{n_pending} pending")


def run_profile_import(client: Any, warehouse: Any, settings: ProfileImportSettings,
                       run_id: str | None = None, log: logging.Logger | Any = None) -> ProfileImportResult:
    """Send new and changed rows of ``settings.table`` to Klaviyo; returns counts and job facts."""
    return _Run(client, warehouse, settings, run_id or uuid.uuid4().hex,
                log or logging.getLogger(__name__)).execute()


def profile_import_description(profiles_table: str) -> str:
    """What ``klaviyo/profile_import`` does, for its asset description."""
    return (f"Bulk-imports new and changed rows of `{profiles_table}` into Klaviyo profiles; "
            f"outcomes in {state.LOG}, sync state in {state.STATE}.")


def build_profile_import_asset(
    profiles_table: str,
    columns: ProfileColumns | None = None,
    key: str = "klaviyo/profile_import",
    sync_name: str = "profile_import",
    target: ActivationTarget | None = None,
) -> Any:
    """The ``klaviyo/profile_import`` asset reading ``profiles_table`` (resources ``klaviyo``, ``warehouse``,
    or those of ``target``)."""
    columns = columns or ProfileColumns()
    target = target or ActivationTarget()

    @activation_asset(key, profiles_table, profile_import_description(profiles_table), target)
    def profile_import(context: AssetExecutionContext, config: ProfileImportConfig) -> MaterializeResult:
        settings = ProfileImportSettings(
            table=profiles_table, columns=columns, sync_name=sync_name,
            **config.model_dump(),
        )
        klaviyo, warehouse_resource = target.resources(context)
        warehouse = warehouse_resource.get_warehouse()
        with klaviyo.get_client() as client:
            result = run_profile_import(client, warehouse, settings, context.run.run_id, context.log)
        metadata = result.metadata()
        if result.pending:
            raise Failure(
                description=f"{result.pending} profiles are in Klaviyo jobs that did not finish within "
                f"{settings.max_wait_s:.0f} s; their outcome is unknown and they will be sent again next run "
                "(raise max_wait_s if Klaviyo is slow today)",
                metadata=metadata,
            )
        return MaterializeResult(metadata=metadata)

    return profile_import
