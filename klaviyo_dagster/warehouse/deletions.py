"""Deletions found by an id sweep: ``<object>_sweep`` (ids the latest sweep saw) -> ``<object>_deleted``.

Klaviyo does not say what it deleted. A sweep reads every id of an object; an id the warehouse holds that
the sweep no longer saw, and whose latest landed version is older than the sweep's start (so it cannot
simply be newer than the sweep), is recorded in ``<object>_deleted`` with ``deleted_at`` = the start of
the first sweep that missed it. An id seen again leaves the table. The ``_current`` views leave out the
ids of ``<object>_deleted`` (current.py). A sweep that would mark more than ``max_share`` of the held ids
deleted is refused: a sweep that read too little (wrong account, missing scope) must not empty a table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from klaviyo_dagster.warehouse.current import DELETED_SUFFIX, ensure_deleted_table
from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse
from klaviyo_dagster.warehouse.sql import quote_ident

SWEEP_SUFFIX = "_sweep"
PARTITION = "_partition"
UTC = timezone.utc


class SweepRefused(ValueError):
    """The sweep would mark too many ids deleted; nothing was recorded."""


@dataclass(frozen=True)
class SweepResult:
    """What one sweep recorded."""

    seen: int
    held: int
    newly_deleted: int
    restored: int
    deleted_total: int


def record_sweep(
    warehouse: Warehouse,
    table: str,
    key: str,
    cursor_column: str | None,
    started_at: datetime,
    id_chunks: Iterable[list[str]],
    *,
    max_share: float = 0.5,
) -> SweepResult:
    """Stage the swept ids (bounded memory) and update ``<table>_deleted`` in one short transaction."""
    started_at = started_at.astimezone(UTC)
    day = started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    sweep_table = table + SWEEP_SUFFIX
    staged = warehouse.replace_partitions(
        sweep_table, {"id": "VARCHAR", PARTITION: "TIMESTAMPTZ"}, PARTITION, [day],
        ({"id": ids, PARTITION: [day] * len(ids)} for ids in id_chunks if ids), primary_key=["id"],
    )  # fmt: skip
    q = warehouse.qualified
    target, sweep, deleted = q(table), q(sweep_table), q(table + DELETED_SUFFIX)
    k = quote_ident(key)
    last = f"max({quote_ident(cursor_column)})" if cursor_column else "NULL::TIMESTAMPTZ"
    latest = f"(SELECT {k} AS id, {last} AS last_cursor FROM {target} GROUP BY {k})"
    with warehouse.transaction() as conn:
        ensure_deleted_table(conn, deleted)
        conn.execute(f"DELETE FROM {sweep} WHERE {PARTITION} < ?", [day])
        held = conn.execute(f"SELECT count(DISTINCT {k}) FROM {target}").fetchone()[0]
        missing_sql = (
            f"FROM {latest} t WHERE t.id NOT IN (SELECT id FROM {sweep}) "
            f"AND t.id NOT IN (SELECT id FROM {deleted}) AND (t.last_cursor IS NULL OR t.last_cursor < ?)"
        )
        missing = conn.execute(f"SELECT count(*) {missing_sql}", [started_at]).fetchone()[0]
        if held and missing > max_share * held:
            raise SweepRefused(
                f"the {table} sweep saw {staged.rows} ids and would mark {missing} of the {held} held ids "
                f"deleted (more than {max_share:.0%}); nothing was recorded. If Klaviyo really deleted them, "
                "re-run with a higher max_deleted_share; otherwise check the API key's account and scopes."
            )
        restored = conn.execute(
            f"DELETE FROM {deleted} WHERE id IN (SELECT id FROM {sweep}) RETURNING id"
        ).fetchall()
        conn.execute(
            f"INSERT INTO {deleted} (id, deleted_at, last_cursor, swept_at) "
            f"SELECT t.id, ?, t.last_cursor, ? {missing_sql}",
            [started_at, datetime.now(UTC), started_at],
        )
        total = conn.execute(f"SELECT count(*) FROM {deleted}").fetchone()[0]
    return SweepResult(staged.rows, int(held), int(missing), len(restored), int(total))


def mark_deleted(warehouse: Warehouse, table: str, ids: Iterable[str], deleted_at: datetime) -> int:
    """Record ids known to be deleted (e.g. by a data-privacy deletion this package requested) at once,
    without waiting for the next sweep. Returns how many were new."""
    ids = sorted(set(ids))
    if not ids:
        return 0
    deleted = warehouse.qualified(table + DELETED_SUFFIX)
    with warehouse.transaction() as conn:
        ensure_deleted_table(conn, deleted)
        new = conn.execute(
            f"INSERT INTO {deleted} (id, deleted_at) SELECT x.id, ? FROM (SELECT unnest(?::VARCHAR[]) AS id) x "
            f"WHERE x.id NOT IN (SELECT id FROM {deleted}) RETURNING id",
            [deleted_at.astimezone(UTC), ids],
        ).fetchall()
    return len(new)
