"""SQL of the event import: its state and log tables, and the diff of an events table against the events
Klaviyo confirmed.

Each row gets a key (metric | identity | unique_id, the unique_id defaulting to the row's content hash);
one row per key is kept and compared with the confirmed and rejected keys of the state table.
:class:`EventDiff` offers the counts, the keys of confirmed events whose row changed since, and the rows to
send, ordered by metric and time, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from klaviyo_dagster.warehouse.activation_inputs import content_hash, identity, one_per_key, text
from klaviyo_dagster.warehouse.activation_state import SCHEMA, create_tables
from klaviyo_dagster.warehouse.sql import quote_ident, quote_table

STATE = f"{SCHEMA}.event_import_state"
LOG = f"{SCHEMA}.event_import_log"
STATE_COLUMNS = ["sync_name", "event_key", "content_hash", "status", "event_id", "job_ref", "synced_at"]
LOG_COLUMNS = ["run_id", "sync_name", "event_key", "outcome", "reason", "job_ref", "logged_at"]
DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (sync_name VARCHAR, event_key VARCHAR, content_hash VARCHAR,
        status VARCHAR, event_id VARCHAR, job_ref VARCHAR, synced_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (run_id VARCHAR, sync_name VARCHAR, event_key VARCHAR, outcome VARCHAR,
        reason VARCHAR, job_ref VARCHAR, logged_at TIMESTAMPTZ)""",
)
IDENTITY_PREFIX = {"id": "id:", "email": "email:", "phone_number": "phone_number:", "external_id": "external_id:"}


def ensure_tables(warehouse: Any) -> None:
    """Create the event import's state and log tables when missing."""
    create_tables(warehouse, DDL)


@dataclass(frozen=True)
class EventCounts:
    """Rows, distinct keys, rows unchanged since handled, and rows changed after their event was confirmed."""

    rows: int
    keys: int
    unchanged: int
    immutable: int


@dataclass(frozen=True)
class EventDiff:
    """The diff of events ``table``: ``metric``, ``time`` and ``unique_id`` columns (None: the row's hash),
    ``identifiers``
    (``{kind: column}``, strongest first), the ``hashed_columns`` of the content hash."""

    table: str
    hash_version: str
    metric: str
    time: str
    unique_id: str | None
    identifiers: Mapping[str, str]
    hashed_columns: Sequence[str]

    def ctes(self) -> str:
        uid = text(self.unique_id, [self.unique_id]) if self.unique_id else "NULL"
        return (
            f"WITH src AS (SELECT t.*, {text(self.metric, [self.metric])} AS __metric, "
            f"{identity(self.identifiers, IDENTITY_PREFIX)} AS __identity, "
            f"{content_hash(self.hash_version, self.hashed_columns)} AS __hash, {uid} AS __uid "
            f"FROM {quote_table(self.table)} t), "
            "keyed AS (SELECT *, coalesce(__uid, __hash) AS __unique_id FROM src), "
            "ided AS (SELECT *, coalesce(__metric, '') || '|' || coalesce(__identity, '') || '|' || __unique_id AS __key "
            "FROM keyed), "
            f"dedup AS ({one_per_key('ided', '__key')}), "
            f"done AS (SELECT event_key, content_hash, status FROM {STATE} WHERE sync_name = $sync "
            "AND status IN ('confirmed', 'rejected')) "
        )

    def counts(self, warehouse: Any, sync_name: str) -> EventCounts:
        row = warehouse.query(
            self.ctes() + "SELECT (SELECT count(*) FROM ided), (SELECT count(*) FROM dedup), "
            "(SELECT count(*) FROM dedup d JOIN done k ON k.event_key = d.__key AND k.content_hash = d.__hash), "
            "(SELECT count(*) FROM dedup d JOIN done k ON k.event_key = d.__key AND k.status = 'confirmed' "
            "AND k.content_hash <> d.__hash)",
            {"sync": sync_name},
        )[0]
        return EventCounts(*(int(v) for v in row))

    def immutable_keys(self, warehouse: Any, sync_name: str) -> list[str]:
        """Keys of rows that changed after Klaviyo confirmed their event."""
        return [row[0] for row in warehouse.query(
            self.ctes() + "SELECT d.__key FROM dedup d JOIN done k ON k.event_key = d.__key "
            "AND k.status = 'confirmed' AND k.content_hash <> d.__hash",
            {"sync": sync_name})]

    def to_send(self, warehouse: Any, sync_name: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Rows whose event is not confirmed (a rejected row goes again once it changed), by metric and time,
        with ``__metric``, ``__identity``, ``__hash``, ``__unique_id`` and ``__key``; chunk by chunk."""
        sql = self.ctes() + (
            "SELECT d.* FROM dedup d ANTI JOIN done k ON k.event_key = d.__key "
            "AND (k.status = 'confirmed' OR k.content_hash = d.__hash) "
            f"ORDER BY d.__metric, d.{quote_ident(self.time)}")
        return warehouse.read_chunks(sql, {"sync": sync_name}, chunk_rows=chunk_rows)
