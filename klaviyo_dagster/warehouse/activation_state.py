"""Where activation keeps its state and outcomes: the warehouse schema ``klaviyo_activation`` and its tables.

- ``profile_import_state``: one row per (sync, identity) with the content hash Klaviyo last accepted
  (status 'imported') or that validation refused (status 'rejected'); the diff reads it.
- ``profile_import_log``: one row per row and run with its outcome (imported, failed, rejected,
  pending) and reason, and the job id.
- ``list_registry``: lists this package created, by account and name, so a retry never creates a second one.
- ``list_sync_log``: every membership change (add, remove, import) sent, per run.
- ``list_members_snapshot``: scratch copy of a list's members as read in the current run.
- ``list_stale_profile_ids``: profile ids a run found Klaviyo refused or ignored (its rows go by identifiers).
- ``import_jobs`` / ``import_job_rows``: the job ledger. Every bulk import job is written here (sync,
  and each row's identity, content hash and profile as sent) BEFORE its POST, as a submission
  (``status`` 'sending', ``job_id`` a local ``unsent-...`` ticket); Klaviyo's answer turns it into the
  job (``job_id`` Klaviyo's, 'open') before the answer is used; a refusal (400) deletes it. A POST whose
  outcome is unknown (reset, timeout, 5xx after sending) leaves it 'unknown' until the job is found among
  Klaviyo's recent ones (adopted: 'open', ``adopted`` true, its rows then checked against the job's
  profiles) or is surely absent ('not_created', rows deleted, sent again). A job stays 'open' until its
  outcome is recorded. The next run resolves submissions and polls open jobs first and excludes their
  rows from what it sends, so two jobs never carry the same rows (functions below).

The other activations' tables (event import, consent, privacy deletions) live in the same schema; their
modules beside this one declare them and write rows through :func:`append_rows` / :func:`upsert_rows`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from klaviyo_dagster.warehouse.sql import quote_ident

SCHEMA = "klaviyo_activation"
STATE = f"{SCHEMA}.profile_import_state"
LOG = f"{SCHEMA}.profile_import_log"
LIST_REGISTRY = f"{SCHEMA}.list_registry"
LIST_LOG = f"{SCHEMA}.list_sync_log"
LIST_MEMBERS = f"{SCHEMA}.list_members_snapshot"
IMPORT_JOBS = f"{SCHEMA}.import_jobs"
LIST_STALE = f"{SCHEMA}.list_stale_profile_ids"
IMPORT_JOB_ROWS = f"{SCHEMA}.import_job_rows"
# Ledger statuses whose rows are at Klaviyo or may be (a job running, a POST without a known outcome):
# never sent in another job meanwhile.
UNSETTLED = ("open", "sending", "unknown")


def create_tables(warehouse: Any, ddl: Iterable[str]) -> None:
    """Run an activation's CREATE ... IF NOT EXISTS statements (idempotent)."""
    for statement in ddl:
        warehouse.execute(statement)


DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (
        sync_name VARCHAR, identity VARCHAR, content_hash VARCHAR, status VARCHAR,
        job_id VARCHAR, synced_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (
        run_id VARCHAR, sync_name VARCHAR, identity VARCHAR, outcome VARCHAR, reason VARCHAR,
        job_id VARCHAR, logged_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_REGISTRY} (
        list_name VARCHAR, list_id VARCHAR, created_at TIMESTAMPTZ, run_id VARCHAR, account VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_LOG} (
        run_id VARCHAR, list_id VARCHAR, list_name VARCHAR, action VARCHAR, profile_id VARCHAR,
        identity VARCHAR, job_id VARCHAR, logged_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_MEMBERS} (
        run_id VARCHAR, list_id VARCHAR, profile_id VARCHAR, email VARCHAR, phone_number VARCHAR,
        external_id VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_STALE} (run_id VARCHAR, profile_id VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {IMPORT_JOBS} (
        job_id VARCHAR, sync_name VARCHAR, run_id VARCHAR, list_id VARCHAR, status VARCHAR,
        submitted_at TIMESTAMPTZ, closed_at TIMESTAMPTZ, note VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {IMPORT_JOB_ROWS} (
        job_id VARCHAR, sync_name VARCHAR, position INTEGER, identity VARCHAR, content_hash VARCHAR,
        profile VARCHAR)""",
    # Tables of earlier releases: the ledger's adoption mark, the registry's account (the key prefix).
    f"ALTER TABLE {IMPORT_JOBS} ADD COLUMN IF NOT EXISTS adopted BOOLEAN",
    f"ALTER TABLE {LIST_REGISTRY} ADD COLUMN IF NOT EXISTS account VARCHAR",
)

LOG_COLUMNS = ["run_id", "sync_name", "identity", "outcome", "reason", "job_id", "logged_at"]
STATE_COLUMNS = ["sync_name", "identity", "content_hash", "status", "job_id", "synced_at"]
LIST_LOG_COLUMNS = ["run_id", "list_id", "list_name", "action", "profile_id", "identity", "job_id", "logged_at"]


def ensure_tables(warehouse: Any) -> None:
    """Create the activation schema and tables when missing (idempotent)."""
    create_tables(warehouse, DDL)


def now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _frame(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(columns), dtype=object)
    for col in columns:
        if col.endswith("_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def _write(con: Any, table: str, frame: pd.DataFrame, key: Sequence[str] = ()) -> None:
    """Inside a transaction: replace the rows of ``table`` sharing ``key`` with ``frame``'s (append when
    ``key`` is empty), columns by name."""
    if not len(frame):
        return
    con.register("__activation_rows", frame)
    if key:
        cond = " AND ".join(f"t.{quote_ident(k)} IS NOT DISTINCT FROM r.{quote_ident(k)}" for k in key)
        con.execute(f"DELETE FROM {table} t USING __activation_rows r WHERE {cond}")
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __activation_rows")
    con.unregister("__activation_rows")


def append_rows(warehouse: Any, table: str, columns: list[str], rows: Sequence[Sequence[Any]]) -> None:
    """Append rows to ``table`` (columns by name; ``*_at`` columns as UTC times) in one short transaction."""
    upsert_rows(warehouse, table, columns, rows, key=())


def upsert_rows(warehouse: Any, table: str, columns: list[str], rows: Sequence[Sequence[Any]],
                key: Sequence[str]) -> None:
    """Replace the rows of ``table`` that share ``key`` with ``rows`` (plain append when ``key`` is empty)."""
    if rows:
        with warehouse.transaction() as con:
            _write(con, table, _frame(rows, columns), key)


def record_outcomes(
    warehouse: Any,
    log_rows: Sequence[Sequence[Any]],
    state_rows: Sequence[Sequence[Any]] = (),
    close: tuple[str, str, str | None] | None = None,
) -> None:
    """Append log rows, upsert state rows and (``close`` = (job_id, status, note)) close a ledger job, in
    one short transaction (all or nothing)."""
    if not log_rows and not state_rows and close is None:
        return
    log = _frame(log_rows, LOG_COLUMNS)
    state = _frame(state_rows, STATE_COLUMNS)
    with warehouse.transaction() as con:
        if close is not None:
            con.execute(f"UPDATE {IMPORT_JOBS} SET status = ?, closed_at = ?, note = ? WHERE job_id = ?",
                        [close[1], now_utc().to_pydatetime(), close[2], close[0]])
        _write(con, STATE, state, key=("sync_name", "identity"))
        _write(con, LOG, log)


def record_list_changes(warehouse: Any, rows: Sequence[Sequence[Any]]) -> None:
    """Append membership changes to ``list_sync_log``."""
    append_rows(warehouse, LIST_LOG, LIST_LOG_COLUMNS, rows)


def begin_submission(warehouse: Any, sync_name: str, run_id: str, rows: Sequence[tuple[str, str, str]],
                     list_id: str | None = None) -> tuple[str, pd.Timestamp]:
    """Write a job about to be POSTed and its rows ((identity, content_hash, profile JSON), in sent order)
    as 'sending' under a local ticket, in one transaction; returns (ticket, submitted_at)."""
    ticket = f"unsent-{uuid.uuid4().hex}"
    submitted_at = now_utc()
    frame = pd.DataFrame([(ticket, sync_name, k, i, h, p) for k, (i, h, p) in enumerate(rows)],
                         columns=["job_id", "sync_name", "position", "identity", "content_hash", "profile"],
                         dtype=object)
    with warehouse.transaction() as con:
        con.execute(f"INSERT INTO {IMPORT_JOBS} (job_id, sync_name, run_id, list_id, status, submitted_at, adopted) "
                    "VALUES (?, ?, ?, ?, 'sending', ?, false)",
                    [ticket, sync_name, run_id, list_id, submitted_at.to_pydatetime()])
        _write(con, IMPORT_JOB_ROWS, frame)
    return ticket, submitted_at


def confirm_submission(warehouse: Any, ticket: str, job_id: str, *, adopted: bool = False,
                       note: str | None = None) -> None:
    """The submission ``ticket`` is Klaviyo's job ``job_id`` (answered, or found after an unknown outcome:
    ``adopted``); it is 'open' from now on."""
    with warehouse.transaction() as con:
        con.execute(f"UPDATE {IMPORT_JOBS} SET job_id = ?, status = 'open', adopted = ?, note = ? WHERE job_id = ?",
                    [job_id, adopted, note, ticket])
        con.execute(f"UPDATE {IMPORT_JOB_ROWS} SET job_id = ? WHERE job_id = ?", [job_id, ticket])


def mark_unknown(warehouse: Any, ticket: str, note: str) -> None:
    """The POST of ``ticket`` failed with an unknown outcome: Klaviyo may hold the job."""
    warehouse.execute(f"UPDATE {IMPORT_JOBS} SET status = 'unknown', note = ? WHERE job_id = ?", [note, ticket])


def drop_submission(warehouse: Any, ticket: str, note: str | None = None) -> None:
    """No job exists for ``ticket`` (Klaviyo refused the POST, or no job appeared after an unknown outcome):
    its rows leave the ledger (sent again); with ``note`` the submission is kept as 'not_created'."""
    with warehouse.transaction() as con:
        con.execute(f"DELETE FROM {IMPORT_JOB_ROWS} WHERE job_id = ?", [ticket])
        if note is None:
            con.execute(f"DELETE FROM {IMPORT_JOBS} WHERE job_id = ?", [ticket])
        else:
            con.execute(f"UPDATE {IMPORT_JOBS} SET status = 'not_created', closed_at = ?, note = ? WHERE job_id = ?",
                        [now_utc().to_pydatetime(), note, ticket])


def unresolved_submissions(warehouse: Any, sync_name: str) -> list[tuple[str, str | None, pd.Timestamp, int]]:
    """(ticket, list_id, submitted_at, rows) of this sync's submissions whose POST has no known outcome
    ('sending': the process stopped during the POST; 'unknown'), oldest first."""
    return [(r[0], r[1], pd.Timestamp(r[2]), int(r[3])) for r in warehouse.query(
        f"SELECT j.job_id, j.list_id, j.submitted_at, (SELECT count(*) FROM {IMPORT_JOB_ROWS} r "
        f"WHERE r.job_id = j.job_id) FROM {IMPORT_JOBS} j WHERE j.sync_name = ? AND j.status IN ('sending', 'unknown') "
        "ORDER BY j.submitted_at", [sync_name])]


def known_job_ids(warehouse: Any) -> set[str]:
    """Every Klaviyo job id the ledger holds (any sync): never adopted for another submission."""
    return {r[0] for r in warehouse.query(f"SELECT job_id FROM {IMPORT_JOBS} WHERE job_id NOT LIKE 'unsent-%'")}


def is_adopted(warehouse: Any, job_id: str) -> bool:
    """Whether ``job_id`` was found after an unknown outcome (its rows are checked against its profiles)."""
    rows = warehouse.query(f"SELECT coalesce(bool_or(adopted), false) FROM {IMPORT_JOBS} WHERE job_id = ?", [job_id])
    return bool(rows and rows[0][0])


def open_jobs(warehouse: Any, sync_name: str) -> list[tuple[str, str | None]]:
    """(job_id, list_id) of this sync's jobs whose outcome is not recorded yet, oldest first."""
    return [(r[0], r[1]) for r in warehouse.query(
        f"SELECT job_id, list_id FROM {IMPORT_JOBS} WHERE sync_name = ? AND status = 'open' ORDER BY submitted_at",
        [sync_name])]


def job_rows(warehouse: Any, job_id: str) -> list[tuple[str, str, str]]:
    """(identity, content_hash, profile JSON) of a job's rows, in the order they were sent."""
    return [(r[0], r[1], r[2]) for r in warehouse.query(
        f"SELECT identity, content_hash, profile FROM {IMPORT_JOB_ROWS} WHERE job_id = ? ORDER BY position",
        [job_id])]


def close_job(warehouse: Any, job_id: str, status: str, note: str | None = None) -> None:
    """Mark a job's outcome recorded (status complete, cancelled or vanished)."""
    record_outcomes(warehouse, (), (), (job_id, status, note))
