"""The DuckDB warehouse: partition replacement through a staging file, plus small read helpers.

Write path of `Warehouse.replace_partitions`: chunks stream into a private staging DuckDB file (bounded
memory, no lock on the warehouse while the API is being read); then ONE short transaction on the
warehouse ATTACHes the staging file read-only, creates or widens the target table, deletes exactly the
partitions being replaced, inserts the staged rows BY NAME and commits. Any failure before the commit
leaves the table as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from klaviyo_dagster.warehouse.connection import open_connection
from klaviyo_dagster.warehouse.current import (
    CURRENT_VIEW_SUFFIX,
    LOADED_AT,
    current_view_sql,
    ensure_deleted_table,
)
from klaviyo_dagster.warehouse.sql import normalize_type, qualified, quote_ident
from klaviyo_dagster.warehouse.staging import STAGING_TABLE, Chunk, StagingArea, staging_root, sweep_stale

_WARNED_CLASH: set[str] = set()
_SWEPT_TMP: list[bool] = []  # the system temp dir is swept of legacy staging once per process


@dataclass
class WriteResult:
    """What one `replace_partitions` call did."""

    table: str
    rows: int
    chunks: int
    deduplicated: int = 0
    columns_added: list[str] = field(default_factory=list)
    staging_seconds: float = 0.0
    commit_seconds: float = 0.0
    preview: dict[str, list[Any]] = field(default_factory=dict)  # the first staged rows, by column


class Warehouse:
    """A DuckDB database file holding the ``schema`` (default ``klaviyo``) tables."""

    def __init__(
        self,
        database: str,
        schema: str = "klaviyo",
        *,
        connection_config: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
        staging_memory_limit: str = "128MB",
        commit_memory_limit: str | None = "128MB",
    ) -> None:
        self.database = database
        self.schema = schema
        self.connection_config = dict(connection_config or {})
        self.log = logger or logging.getLogger(__name__)
        self.staging_memory_limit = staging_memory_limit
        self.commit_memory_limit = commit_memory_limit

    # -- connections -------------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse file (hold it briefly: it holds the file's write lock)."""
        if self.catalog == self.schema and self.database not in _WARNED_CLASH:
            _WARNED_CLASH.add(self.database)
            self.log.info(
                "DuckDB calls the catalog of %s %r, like the schema: in SQL write %s (Warehouse.qualified) "
                "or USE %s.%s; a bare %s.<table> is ambiguous to DuckDB.",
                self.database, self.catalog, self.qualified("<table>"), self.catalog, self.schema, self.schema,
            )  # fmt: skip
        with open_connection(self.database, self.connection_config, self.log) as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT (ROLLBACK on error). Keep it short."""
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @property
    def catalog(self) -> str:
        """DuckDB's name for the database file (its stem: ``warehouse`` for ``data/warehouse.duckdb``)."""
        if self.database == ":memory:":
            return "memory"
        return Path(self.database).name.split(".")[0]

    def qualified(self, table: str) -> str:
        """``"catalog"."schema"."table"`` (``table`` may be ``schema.table``).

        Always fully qualified: with a file named ``klaviyo.duckdb`` the catalog is also called
        ``klaviyo``, so DuckDB finds a bare ``klaviyo.profiles`` ambiguous.
        """
        schema, _, name = table.rpartition(".")
        return f"{quote_ident(self.catalog)}.{qualified(schema or self.schema, name)}"

    # -- reads ---------------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
        """Run ``sql`` and return all rows (for small results)."""
        with self.connect() as conn:
            return (
                conn.execute(sql, params).fetchall() if params is not None else conn.execute(sql).fetchall()
            )

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run one statement (autocommit)."""
        with self.connect() as conn:
            if params is not None:
                conn.execute(sql, params)
            else:
                conn.execute(sql)

    def read_chunks(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None, chunk_rows: int = 10_000
    ) -> Iterator[pd.DataFrame]:
        """Stream a query's result as DataFrames of about ``chunk_rows`` rows.

        The connection (and so the file lock) is held until the iterator is exhausted or closed.
        """
        vectors = max(1, -(-chunk_rows // 2048))
        with self.connect() as conn:
            result = conn.execute(sql, params) if params is not None else conn.execute(sql)
            while True:
                frame = result.fetch_df_chunk(vectors)
                if frame is None or len(frame) == 0:
                    return
                yield frame

    def table_exists(self, name: str) -> bool:
        """Whether ``schema.name`` exists (table or view)."""
        rows = self.query(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_catalog = ? AND table_schema = ? AND table_name = ?",
            [self.catalog, self.schema, name],
        )
        return bool(rows)

    def columns(self, name: str) -> dict[str, str]:
        """``{column: type}`` of ``schema.name`` in table order (empty when it does not exist)."""
        with self.connect() as conn:
            return _columns(conn, self.catalog, self.schema, name)

    # -- writes --------------------------------------------------------------------------------------
    def sweep_staging(self) -> Path | None:
        """Remove staging left by killed runs; return the staging root (None: the system temp dir, for an
        in-memory database).

        Runs before every write (a listing of a folder that is usually empty). Live runs' staging is never
        touched: each holds a lock on its area. Once per process it also sweeps the system temp dir, where
        releases before this one staged, of long-idle areas without a lock file.
        """
        root = staging_root(self.database)
        sweep_stale(root, logger=self.log)
        if root is not None and not _SWEPT_TMP:
            _SWEPT_TMP.append(True)
            sweep_stale(None, logger=self.log)
        return root

    def replace_partitions(
        self,
        table: str,
        columns: Mapping[str, str],
        partition_column: str,
        partition_values: Sequence[datetime],
        chunks: Iterable[Chunk],
        *,
        primary_key: Sequence[str] | None = None,
        latest_by: Sequence[str] | None = None,
        extra_column_type: str = "JSON",
        version_of: tuple[str, str] | None = None,
        exclude_deleted: Sequence[tuple[str, str]] = (),
    ) -> WriteResult:
        """Replace exactly ``partition_values`` of ``schema.table`` with the rows of ``chunks``.

        ``columns`` maps declared column names to SQL types and must include ``partition_column``
        (TIMESTAMPTZ, day starts in UTC). Keys of a chunk not in ``columns`` are added as columns of
        ``extra_column_type`` (in staging and in the table). With ``primary_key``, the last staged row
        of each key wins. With ``latest_by`` (columns, newest first), a view ``<table>_current`` keeps
        the latest row of each primary key; ``version_of`` (parent key, parent cursor) keeps only rows of
        each parent's latest version, ``exclude_deleted`` ((column, deleted table) pairs) leaves out rows
        whose column is in a ``<object>_deleted`` table (see current.py). Every staged row must fall in
        one of ``partition_values``.
        A failure anywhere before the final commit leaves the table untouched.
        """
        if partition_column not in columns:
            raise ValueError(f"partition column {partition_column!r} must be one of the declared columns")
        values = [_as_utc(v) for v in partition_values]
        started = time.monotonic()
        root = self.sweep_staging()
        with StagingArea(
            columns,
            extra_column_type=extra_column_type,
            memory_limit=self.staging_memory_limit,
            directory=None if root is None else str(root),
        ) as staging:
            for chunk in chunks:
                staging.append(chunk)
            dropped = staging.dedupe(primary_key) if primary_key and staging.rows else 0
            outside = staging.count_outside(partition_column, values) if staging.rows else 0
            if outside:
                raise ValueError(
                    f"{outside} staged rows of {table} fall outside the partitions being replaced "
                    f"({_describe(values)}); nothing was written"
                )
            staged_columns = dict(staging.columns)
            rows, nchunks = staging.rows, staging.chunks
            preview = staging.head()
            staging.seal()
            staging_seconds = time.monotonic() - started
            commit_started = time.monotonic()
            view = (
                {"primary_key": primary_key, "latest_by": latest_by, "version_of": version_of,
                 "exclude": tuple(exclude_deleted)}
                if primary_key and latest_by
                else None
            )  # fmt: skip
            added = self._commit(table, staged_columns, partition_column, values, str(staging.path), view)
        result = WriteResult(
            table=f"{self.schema}.{table}",
            rows=rows,
            chunks=nchunks,
            deduplicated=dropped,
            columns_added=added,
            staging_seconds=round(staging_seconds, 3),
            commit_seconds=round(time.monotonic() - commit_started, 3),
            preview=preview,
        )
        if added:
            self.log.info("%s gained columns: %s", result.table, ", ".join(added))
        return result

    def _commit(
        self,
        table: str,
        columns: Mapping[str, str],
        partition_column: str,
        values: list[datetime],
        staging_path: str,
        view: Mapping[str, Any] | None,
    ) -> list[str]:
        target = self.qualified(table)
        with self.connect() as conn:
            conn.execute(f"ATTACH {_literal(staging_path)} AS _stg (READ_ONLY)")
            restore = self._bound_memory(conn)
            try:
                conn.execute("BEGIN TRANSACTION")
                try:
                    added = self._ensure_table(conn, table, columns)
                    conn.execute(
                        f"DELETE FROM {target} WHERE {quote_ident(partition_column)} "
                        f"IN (SELECT unnest(?::TIMESTAMPTZ[]))",
                        [values],
                    )
                    names = ", ".join(quote_ident(c) for c in columns)
                    conn.execute(
                        f"INSERT INTO {target} BY NAME SELECT {names}, ?::TIMESTAMPTZ AS {LOADED_AT} "
                        f"FROM _stg.{STAGING_TABLE}",
                        [datetime.now(timezone.utc)],
                    )
                    if view is not None:
                        self.create_current_view(conn, table, **view)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.execute("DETACH _stg")
                for setting, value in restore.items():
                    conn.execute(f"SET {setting} = {_literal(value)}")
        return added

    def create_latest_partition_view(self, table: str, partition_column: str) -> str:
        """(Re)create view ``<table>_current``: the rows of the table's latest partition (for snapshots,
        the latest capture: a list deleted in Klaviyo is absent there, though older captures keep it)."""
        view = self.qualified(table + CURRENT_VIEW_SUFFIX)
        part = quote_ident(partition_column)
        with self.connect() as conn:
            conn.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {quote_ident(table)} "
                f"WHERE {part} = (SELECT max({part}) FROM {quote_ident(table)})"
            )
        return view

    def _bound_memory(self, conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Cap DuckDB's memory while a big partition is copied in (it spills to disk instead of growing
        with the partition); returns the settings to restore afterwards."""
        if not self.commit_memory_limit:
            return {}
        wanted = {"memory_limit": self.commit_memory_limit, "preserve_insertion_order": "false"}
        restore = {}
        for setting, value in wanted.items():
            restore[setting] = str(conn.execute(f"SELECT current_setting('{setting}')").fetchone()[0])
            conn.execute(f"SET {setting} = {_literal(value)}")
        return restore

    def _ensure_table(
        self, conn: duckdb.DuckDBPyConnection, table: str, columns: Mapping[str, str]
    ) -> list[str]:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.catalog)}.{quote_ident(self.schema)}")
        existing = _columns(conn, self.catalog, self.schema, table)
        target = self.qualified(table)
        if not existing:
            ddl = ", ".join(f"{quote_ident(n)} {t}" for n, t in columns.items())
            conn.execute(f"CREATE TABLE {target} ({ddl}, {quote_ident(LOADED_AT)} TIMESTAMPTZ)")
            return []
        added = []
        for name, sql_type in columns.items():
            if name not in existing:
                conn.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {sql_type}")
                added.append(name)
            elif normalize_type(existing[name]) != normalize_type(sql_type):
                self.log.debug(
                    "%s.%s is %s in the warehouse, %s in this write: values are cast",
                    target,
                    name,
                    existing[name],
                    sql_type,
                )
        return added

    def create_current_view(
        self,
        conn: duckdb.DuckDBPyConnection,
        table: str,
        primary_key: Sequence[str],
        latest_by: Sequence[str],
        version_of: tuple[str, str] | None = None,
        exclude: Sequence[tuple[str, str]] = (),
    ) -> None:
        """(Re)create ``<table>_current`` on ``conn`` (inside the caller's transaction; see current.py)."""
        for _, deleted in exclude:
            ensure_deleted_table(conn, self.qualified(deleted))
        conn.execute(
            current_view_sql(
                self.qualified(table + CURRENT_VIEW_SUFFIX), table, primary_key, latest_by,
                version_of=version_of, exclude=exclude,
            )  # fmt: skip
        )


def _columns(conn: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [catalog, schema, table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def _as_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"partition values must be datetimes, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _describe(values: Sequence[datetime]) -> str:
    if not values:
        return "none"
    days = sorted(v.date().isoformat() for v in values)
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
