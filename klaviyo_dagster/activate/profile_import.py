"""The ``klaviyo/profile_import`` asset: send new and changed profile rows to Klaviyo, record outcomes.

Flow (:func:`run_profile_import`, plain Python; :func:`build_profile_import_asset` wraps it):
1. one DuckDB query hashes every input row, dedupes identities and anti-joins the state table, so
   only new or changed rows ever leave the warehouse, chunk by chunk;
2. each row is rendered and validated; rejects are logged with their reason;
3. valid profiles are packed into jobs (<= 10,000 profiles, <= 5 MB), submitted, and a bounded number
   of jobs stay in flight; each is polled to its real outcome and its import errors are matched back
   to rows; the log gets one outcome per row and the state advances only for rows Klaviyo confirmed.
A 400 naming rows records those rows failed and sends the rest at once (no pointer: bounded bisection,
isolate.py). Every job is in the ledger (state.IMPORT_JOBS) before its POST and has its id before the
answer is used: a run first settles submissions an earlier run left without an answer, polls the jobs it
left open, and never sends their rows in a second job while they run. A POST whose answer was lost is
resolved by finding its job at Klaviyo (jobs.locate_job) before anything is sent again.
A repeated identity sends one row: the latest by ``latest_by`` (default: the first of ``updated_at``,
``updated``, ``_loaded_at`` the table has), ties and tables without such a column by content hash.
"""


import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue
from pydantic import Field

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.inputs import (
    ActivationTarget,
    build_activation_run_asset,
    check_table_name,
    pack_rows,
    table_columns,
)
from klaviyo_dagster.activate.jobs import (
    MAX_JOB_BYTES,
    MAX_JOB_PROFILES,
    UNKNOWN_WAIT_S,
    JobBatch,
    JobOutcome,
    JobPacker,
    PackedProfile,
    job_verdict,
    poll_job,
    resume_open_jobs,
    submit_tracked,
)
from klaviyo_dagster.activate.render import (
    ProfileColumns,
    RenderPlan,
    build_render_plan,
    render_profile,
)
from klaviyo_dagster.activate.validate import profile_problem, size_problem
from klaviyo_dagster.warehouse.profile_import import ProfileDiff

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
    unknown_outcome_wait_s: float = Field(
        default=UNKNOWN_WAIT_S,
        description="After a job POST whose answer was lost (reset, timeout, 5xx): how long a job may still "
        "appear at Klaviyo before its rows are sent again (it is adopted, not resent, when found).",
    )
    latest_by: str | None = Field(
        default=None,
        description="Column whose latest value picks the row sent when rows repeat an identity (default: "
        "updated_at, updated or _loaded_at when present, else the lowest content hash).",
    )
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


LATEST_BY_CANDIDATES = ("updated_at", "updated", "_loaded_at")


def latest_by_column(table: str, available: list[str], configured: str | None) -> str | None:
    """The column that picks the row sent for a repeated identity (the latest wins), or None."""
    if configured:
        if configured not in available:
            raise ValueError(f"latest_by={configured!r} is not a column of {table!r} (columns: "
                             f"{', '.join(available)}); set latest_by to the column whose highest value marks "
                             "the row to send for a repeated identity")
        return configured
    return next((c for c in LATEST_BY_CANDIDATES if c in available), None)


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
    isolation_calls: int = 0
    resumed_jobs: int = 0
    unknown_outcomes: int = 0
    adopted_jobs: int = 0
    duplicate_identities: list[str] = field(default_factory=list)
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
            "isolation_calls": self.isolation_calls,
            "resumed_jobs": self.resumed_jobs,
            "unknown_outcomes": self.unknown_outcomes,
            "adopted_jobs": self.adopted_jobs,
            "duplicate_identities": MetadataValue.json(self.duplicate_identities[:50]),
            "jobs": len(self.job_ids),
            "job_ids": MetadataValue.json(self.job_ids),
            "job_profiles": MetadataValue.json(self.job_profiles),
            "job_bytes": MetadataValue.json(self.job_bytes),
            "duration_s": round(self.duration_s, 3),
        }


def profile_diff(table: str, plan: RenderPlan, columns: ProfileColumns, available: list[str],
                 latest_by: str | None = None) -> ProfileDiff:
    """The warehouse diff of ``table``: content hash over the rendered columns (and the rendering's
    signature), identity from the identifier columns present."""
    return ProfileDiff(table=table, hash_version=HASH_VERSION + plan.signature(), hashed_columns=plan.columns,
                       identifiers=columns.identifier_columns(available), prefixes=IDENTITY_PREFIX,
                       latest_by=latest_by)


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
        latest_by = latest_by_column(s.table, available, s.latest_by)
        if not s.dry_run:
            self._resume()
        diff = profile_diff(s.table, plan, s.columns, available, latest_by)
        counts = diff.counts(self.warehouse, s.sync_name)
        r = self.result
        r.rows, r.duplicates = counts.rows, counts.rows - counts.identities
        r.unchanged = 0 if s.full_resync else counts.unchanged
        r.pending += counts.in_open_jobs
        if r.duplicates:
            r.duplicate_identities = diff.repeated_identities(self.warehouse, s.sync_name)
            rule = (f"the row with the latest {latest_by!r} is sent" if latest_by else
                    "no latest_by column: the row with the lowest content hash is sent (set latest_by)")
            shown = ", ".join(r.duplicate_identities[:20])
            more = len(r.duplicate_identities) - 20
            self.log.warning(f"{r.duplicates} rows of {s.table} repeat an identity ({len(r.duplicate_identities)} "
                             f"identities: {shown}{f' and {more} more' if more > 0 else ''}); {rule}")
        if counts.in_open_jobs:
            self.log.info(f"{counts.in_open_jobs} changed rows are in jobs still running at Klaviyo; not sent again")

        def render(row: dict[str, Any]) -> PackedProfile | tuple[str, str, str]:
            identity, content_hash = row.pop("__identity"), row.pop("__hash")
            profile = render_profile(row, plan)
            size = len(orjson.dumps(profile))
            reason = profile_problem(profile, size) if s.prevalidate else size_problem(size)
            return (identity, content_hash, reason) if reason else PackedProfile(identity, content_hash, profile, size)

        pack_rows(diff.changed(self.warehouse, s.sync_name, full_resync=s.full_resync, chunk_rows=s.chunk_rows),
                  render, JobPacker(s.max_job_profiles, s.max_job_bytes), self._submit, self._record_rejects)
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

    def _resume(self) -> None:
        """Poll the jobs earlier runs left open and record their outcomes (before anything is sent)."""
        s = self.settings
        for job_id, items, outcome in resume_open_jobs(self.client, self.warehouse, s.sync_name, s.max_wait_s,
                                                       unknown_wait_s=s.unknown_outcome_wait_s, log=self.log):
            self.result.resumed_jobs += 1
            self.log.info(f"job {job_id} of an earlier run: {outcome.status if outcome else 'vanished'}")
            self._record(job_id, items, outcome)

    def _submit(self, batch: JobBatch) -> None:
        r = self.result
        r.sent += len(batch.items)
        r.job_profiles.append(len(batch.items))
        r.job_bytes.append(batch.body_bytes)
        if self.settings.dry_run:
            return
        tally: Counter = Counter()
        isolation = submit_tracked(self.client, self.warehouse, self.settings.sync_name, r.run_id,
                                   batch.items, log=self.log, unknown_wait_s=self.settings.unknown_outcome_wait_s,
                                   tally=tally)
        r.isolation_calls += isolation.extra_calls
        r.unknown_outcomes += tally["unknown_outcomes"]
        r.adopted_jobs += tally["adopted_jobs"]
        if isolation.rejected:
            now, s = state.now_utc(), self.settings
            r.failed += len(isolation.rejected)
            state.record_outcomes(self.warehouse, [(r.run_id, s.sync_name, item.identity, "failed", reason, None, now)
                                                   for item, reason in isolation.rejected])
        for items, job_id in isolation.accepted:
            r.job_ids.append(job_id)
            self.inflight.append(_InFlight(job_id, JobBatch(items, 0)))
        while len(self.inflight) >= max(1, self.settings.max_jobs_in_flight):
            self._finish(self.inflight.popleft())

    def _finish(self, job: _InFlight) -> None:
        outcome = poll_job(self.client, self.warehouse, job.job_id, max_wait_s=self.settings.max_wait_s)
        self._record(job.job_id, job.batch.items, outcome)

    def _record(self, job_id: str, items: list[PackedProfile], outcome: JobOutcome | None) -> None:
        """Log each row of a job by what Klaviyo confirmed; advance state for imported rows; close the job
        unless it is still running."""
        s, r = self.settings, self.result
        now = state.now_utc()
        log_rows, state_rows = [], []
        close: tuple[str, str, str | None] | None = None
        if outcome is not None and outcome.status == "timeout":
            reason = (f"job still {outcome.attributes.get('status', 'unknown')} after {outcome.waited_s:.0f} s; "
                      "polled again next run (not sent again while it runs)")
            log_rows = [(r.run_id, s.sync_name, i.identity, "pending", reason, job_id, now) for i in items]
        elif outcome is None:
            reason = f"job {job_id} is unknown to Klaviyo (expired or vanished); sent again next run"
            log_rows = [(r.run_id, s.sync_name, i.identity, "pending", reason, job_id, now) for i in items]
            close = (job_id, "vanished", reason)
        else:
            verdict = job_verdict(self.client, outcome, items)
            hashes = {i.identity: i.content_hash for i in items}
            for identity in verdict.imported:
                log_rows.append((r.run_id, s.sync_name, identity, "imported", None, job_id, now))
                state_rows.append((s.sync_name, identity, hashes[identity], "imported", job_id, now))
            for identity, reason in verdict.failed.items():
                log_rows.append((r.run_id, s.sync_name, identity, "failed", reason, job_id, now))
            for identity, reason in verdict.pending.items():
                log_rows.append((r.run_id, s.sync_name, identity, "pending", reason, job_id, now))
            for reason in verdict.unmatched:
                log_rows.append((r.run_id, s.sync_name, None, "unmatched_error", reason, job_id, now))
            r.unmatched_errors += len(verdict.unmatched)
            if verdict.pending:
                self.log.warning(f"job {job_id}: Klaviyo counted {outcome.failed_count} failed rows, "
                                 f"{len(verdict.failed)} matched to rows; {len(verdict.pending)} rows stay pending "
                                 "(outcome unknown) and are sent again next run")
            close = (job_id, outcome.status, None)
        state.record_outcomes(self.warehouse, log_rows, state_rows, close)
        n_failed = sum(1 for row in log_rows if row[3] == "failed")
        n_pending = sum(1 for row in log_rows if row[3] == "pending")
        r.failed += n_failed
        r.pending += n_pending
        r.imported += len(state_rows)
        self.log.info(f"job {job_id} {outcome.status if outcome else 'vanished'}: {len(state_rows)} imported, "
                      f"{n_failed} failed, {n_pending} pending")


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
) -> AssetsDefinition:
    """The ``klaviyo/profile_import`` asset reading ``profiles_table`` (resources ``klaviyo``, ``warehouse``,
    or those of ``target``)."""
    columns = columns or ProfileColumns()
    check_table_name(profiles_table, "profiles_table")

    def run(client: Any, warehouse: Any, config: ProfileImportConfig,
            context: AssetExecutionContext) -> ProfileImportResult:
        settings = ProfileImportSettings(table=profiles_table, columns=columns, sync_name=sync_name,
                                         **config.model_dump())
        return run_profile_import(client, warehouse, settings, context.run.run_id, context.log)

    unconfirmed = (
        "{pending} profiles have no confirmed outcome yet: in Klaviyo jobs that did not finish within "
        "{max_wait_s:.0f} s (polled again next run, not resent while they run) or in jobs whose failures Klaviyo "
        f"did not attribute to rows (sent again next run); see {state.LOG} (outcome 'pending'). Raise max_wait_s "
        "if Klaviyo is slow today")

    return build_activation_run_asset(key, profiles_table, profile_import_description(profiles_table), target,
                                      ProfileImportConfig, run, unconfirmed)
