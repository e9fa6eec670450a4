"""State and outcome tables of activation, in the warehouse schema ``klaviyo_activation``.

- ``profile_import_state``: one row per (sync, identity) with the content hash Klaviyo last accepted
  (status 'imported') or that validation refused (status 'rejected'); the diff reads it.
- ``profile_import_log``: one row per row and run with its outcome (imported, failed, rejected,
  pending) and reason, and the job id.
- ``list_registry``: lists this package created, by name, so a retry never creates a second one.
- ``list_sync_log``: every membership change (add, remove, import) sent, per run.
- ``list_members_snapshot``: scratch copy of a list's members as read in the current run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

SCHEMA = "klaviyo_activation"
STATE = f"{SCHEMA}.profile_import_state"
LOG = f"{SCHEMA}.profile_import_log"
LIST_REGISTRY = f"{SCHEMA}.list_registry"
LIST_LOG = f"{SCHEMA}.list_sync_log"
LIST_MEMBERS = f"{SCHEMA}.list_members_snapshot"

DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (
        sync_name VARCHAR, identity VARCHAR, content_hash VARCHAR, status VARCHAR,
        job_id VARCHAR, synced_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (
        run_id VARCHAR, sync_name VARCHAR, identity VARCHAR, outcome VARCHAR, reason VARCHAR,
        job_id VARCHAR, logged_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_REGISTRY} (
        list_name VARCHAR, list_id VARCHAR, created_at TIMESTAMPTZ, run_id VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_LOG} (
        run_id VARCHAR, list_id VARCHAR, list_name VARCHAR, action VARCHAR, profile_id VARCHAR,
        identity VARCHAR, job_id VARCHAR, logged_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LIST_MEMBERS} (
        run_id VARCHAR, list_id VARCHAR, profile_id VARCHAR, email VARCHAR, phone_number VARCHAR,
        external_id VARCHAR)""",
)

LOG_COLUMNS = ["run_id", "sync_name", "identity", "outcome", "reason", "job_id", "logged_at"]
STATE_COLUMNS = ["sync_name", "identity", "content_hash", "status", "job_id", "synced_at"]
LIST_LOG_COLUMNS = ["run_id", "list_id", "list_name", "action", "profile_id", "identity", "job_id", "logged_at"]


def ensure_tables(warehouse: Any) -> None:
    """Create the activation schema and tables when missing (idempotent)."""
    for statement in DDL:
        warehouse.execute(statement)


def now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _frame(rows: Sequence[Sequence[Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=columns, dtype=object)
    for col in ("logged_at", "synced_at"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def record_outcomes(
    warehouse: Any,
    log_rows: Sequence[Sequence[Any]],
    state_rows: Sequence[Sequence[Any]] = (),
) -> None:
    """Append log rows and upsert state rows in one short transaction (all or nothing)."""
    if not log_rows and not state_rows:
        return
    log = _frame(log_rows, LOG_COLUMNS)
    state = _frame(state_rows, STATE_COLUMNS)
    with warehouse.transaction() as con:
        if len(state):
            con.register("__activation_state_rows", state)
            con.execute(
                f"DELETE FROM {STATE} s USING __activation_state_rows r "
                "WHERE s.sync_name = r.sync_name AND s.identity = r.identity"
            )
            con.execute(f"INSERT INTO {STATE} BY NAME SELECT * FROM __activation_state_rows")
            con.unregister("__activation_state_rows")
        if len(log):
            con.register("__activation_log_rows", log)
            con.execute(f"INSERT INTO {LOG} BY NAME SELECT * FROM __activation_log_rows")
            con.unregister("__activation_log_rows")


def record_list_changes(warehouse: Any, rows: Sequence[Sequence[Any]]) -> None:
    """Append membership changes to ``list_sync_log``."""
    if not rows:
        return
    frame = _frame(rows, LIST_LOG_COLUMNS)
    with warehouse.transaction() as con:
        con.register("__activation_list_rows", frame)
        con.execute(f"INSERT INTO {LIST_LOG} BY NAME SELECT * FROM __activation_list_rows")
        con.unregister("__activation_list_rows")
