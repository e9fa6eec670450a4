"""A private staging DuckDB file for one write: rows arrive chunk by chunk, memory stays bounded.

Each `StagingArea` lives in its own temporary directory (one per write, removed on close), so it never
contends for the warehouse's write lock. Chunks are column-oriented (``{column: [values]}``) or a list of
row dicts; keys the table does not know yet become new columns (schema evolution). Values are inserted
BY NAME and cast by DuckDB to the declared column types (ISO strings to TIMESTAMPTZ, JSON text to JSON).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from klaviyo_dagster.warehouse.sql import quote_ident

STAGING_TABLE = "rows"

Chunk = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]


def to_columns(chunk: Chunk) -> dict[str, Sequence[Any]]:
    """A chunk as ``{column: values}``; row dicts are transposed (missing keys become None)."""
    if isinstance(chunk, Mapping):
        return dict(chunk)
    names: dict[str, None] = {}
    for row in chunk:
        for key in row:
            names.setdefault(key, None)
    return {name: [row.get(name) for row in chunk] for name in names}


class StagingArea:
    """One staging table ``rows`` in a fresh DuckDB file; `columns` grows as new keys appear."""

    def __init__(
        self,
        columns: Mapping[str, str],
        *,
        extra_column_type: str = "JSON",
        memory_limit: str = "64MB",
        directory: str | None = None,
    ) -> None:
        self.columns: dict[str, str] = dict(columns)
        self.added: list[str] = []
        self.extra_column_type = extra_column_type
        self.rows = 0
        self.chunks = 0
        self._dir = Path(tempfile.mkdtemp(prefix="klaviyo_staging_", dir=directory))
        self.path = self._dir / "staging.duckdb"
        self._conn: duckdb.DuckDBPyConnection | None = duckdb.connect(
            str(self.path),
            config={"memory_limit": memory_limit, "threads": 1, "preserve_insertion_order": True},
        )
        self._conn.execute("SET TimeZone = 'UTC'")
        ddl = ", ".join(f"{quote_ident(n)} {t}" for n, t in self.columns.items())
        self._conn.execute(f"CREATE TABLE {STAGING_TABLE} ({ddl})")

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise RuntimeError("staging area is closed")
        return self._conn

    def append(self, chunk: Chunk) -> int:
        """Insert one chunk; returns its row count."""
        cols = to_columns(chunk)
        if not cols:
            return 0
        n = len(next(iter(cols.values())))
        if n == 0:
            return 0
        for name in cols:
            if name not in self.columns:
                self.conn.execute(
                    f"ALTER TABLE {STAGING_TABLE} ADD COLUMN {quote_ident(name)} {self.extra_column_type}"
                )
                self.columns[name] = self.extra_column_type
                self.added.append(name)
        frame = pd.DataFrame(cols, dtype=object, copy=False)
        select = ", ".join(quote_ident(name) for name in cols)
        self.conn.register("_chunk", frame)
        try:
            self.conn.execute(f"INSERT INTO {STAGING_TABLE} BY NAME SELECT {select} FROM _chunk")
        finally:
            self.conn.unregister("_chunk")
        self.rows += n
        self.chunks += 1
        return n

    def dedupe(self, primary_key: Sequence[str]) -> int:
        """Keep the last staged row of each primary key; returns how many rows were dropped."""
        key = ", ".join(quote_ident(k) for k in primary_key)
        dupes = self.conn.execute(
            f"SELECT count(*) FROM (SELECT {key} FROM {STAGING_TABLE} GROUP BY {key} HAVING count(*) > 1)"
        ).fetchone()[0]
        if not dupes:
            return 0
        before = self.rows
        self.conn.execute(
            f"DELETE FROM {STAGING_TABLE} WHERE rowid NOT IN "
            f"(SELECT max(rowid) FROM {STAGING_TABLE} GROUP BY {key})"
        )
        self.rows = self.conn.execute(f"SELECT count(*) FROM {STAGING_TABLE}").fetchone()[0]
        return before - self.rows

    def count_outside(self, partition_column: str, values: Sequence[Any]) -> int:
        """Rows whose partition value is not one of ``values`` (a bug upstream if not 0)."""
        return self.conn.execute(
            f"SELECT count(*) FROM {STAGING_TABLE} WHERE {quote_ident(partition_column)} IS NULL "
            f"OR {quote_ident(partition_column)} NOT IN (SELECT unnest(?::TIMESTAMPTZ[]))",
            [list(values)],
        ).fetchone()[0]

    def seal(self) -> None:
        """Checkpoint and close the connection so the file can be ATTACHed read-only elsewhere."""
        if self._conn is not None:
            self._conn.execute("CHECKPOINT")
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close and delete the staging file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> StagingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
