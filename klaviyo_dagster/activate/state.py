"""Activation's state and outcome tables (schema ``klaviyo_activation``): the names and functions activation
uses. The tables, their SQL and what each holds are in `klaviyo_dagster.warehouse.activation_state`; this
module only gathers them for activate/ (``state.record_outcomes(...)``, ``state.LOG``).
"""

from __future__ import annotations

from klaviyo_dagster.warehouse.activation_state import (
    IMPORT_JOB_ROWS,
    IMPORT_JOBS,
    LIST_LOG,
    LIST_LOG_COLUMNS,
    LIST_MEMBERS,
    LIST_REGISTRY,
    LIST_STALE,
    LOG,
    LOG_COLUMNS,
    SCHEMA,
    STATE,
    STATE_COLUMNS,
    UNSETTLED,
    append_rows,
    begin_submission,
    close_job,
    confirm_submission,
    drop_submission,
    ensure_tables,
    is_adopted,
    job_rows,
    known_job_ids,
    mark_unknown,
    now_utc,
    open_jobs,
    record_list_changes,
    record_outcomes,
    unresolved_submissions,
    upsert_rows,
)

__all__ = [
    "IMPORT_JOBS", "IMPORT_JOB_ROWS", "LIST_LOG", "LIST_LOG_COLUMNS", "LIST_MEMBERS", "LIST_REGISTRY", "LIST_STALE",
    "LOG", "LOG_COLUMNS", "SCHEMA", "STATE", "STATE_COLUMNS", "UNSETTLED", "append_rows", "begin_submission",
    "close_job", "confirm_submission", "drop_submission", "ensure_tables", "is_adopted", "job_rows",
    "known_job_ids", "mark_unknown", "now_utc", "open_jobs", "record_list_changes",
    "record_outcomes", "unresolved_submissions", "upsert_rows",
]
