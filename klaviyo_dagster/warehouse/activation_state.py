"""Where activation keeps its state and outcomes: the warehouse schema ``klaviyo_activation`` and its tables.

- ``profile_import_state``: one row per (sync, identity) with the content hash Klaviyo last accepted
  (status 'imported') or that validation refused (status 'rejected'); the diff reads it.
- ``profile_import_log``: one row per row and run with its outcome (imported, failed, rejected,
  pending) and reason, and the job id.
- ``list_registry``: lists this package created, by account and name, so a retry never creates a second one.
- ``list_sync_log``: every membership change (add, remove, import) sent, per run.
- ``list_members_snapshot``: scratch copy of a list's members as read in the current run.
- ``list_stale_profile_ids``: profile ids a run found Klaviyo refused or ignored (its rows go by identifiers).
- ``import_jobs`` / ``import_job_rows``: the job ledger (see activate/state.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
