"""A private staging DuckDB file for one write: rows arrive chunk by chunk, memory stays bounded.

Each `StagingArea` lives in its own directory (one per write, removed on close), so it never contends for
the warehouse's write lock. The directories sit inside the warehouse's own folder
(``<folder>/.klaviyo_staging/``, see `staging_root`), never under ``$TMPDIR``: a run killed with SIGKILL
can leave one behind, and `sweep_stale` removes those at the next write. Each area holds an exclusive
``flock`` on its ``owner.lock`` for its whole life; the kernel drops it when the process dies however it
dies, so a sweep can tell a dead run's leftovers (lock free) from a live run's staging (lock held) without
trusting pids or ages. Chunks are column-oriented (``{column: [values]}``), a list of
row dicts, or raw JSON:API pages (`json_pages.JsonPages`, parsed and unnested by DuckDB itself); keys the
table does not know yet become new columns (schema evolution). Values are inserted BY NAME and cast by
DuckDB to the declared column types (ISO strings to TIMESTAMPTZ, JSON text to JSON).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from klaviyo_dagster.warehouse.json_pages import JsonPages, new_keys, stage_pages
from klaviyo_dagster.warehouse.sql import quote_ident

try:  # POSIX; elsewhere a dead owner is told by its pid
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STAGING_TABLE = "rows"
STAGING_DIR = ".klaviyo_staging"
PREFIX = "klaviyo_staging_"
LOCK_FILE = "owner.lock"
# Staging left under $TMPDIR by releases before the lock file: removed once untouched this long.
LEGACY_IDLE_SECONDS = 6 * 3600.0

Chunk = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | JsonPages


def to_columns(chunk: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
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
        memory_limit: str = "128MB",
        directory: str | None = None,
    ) -> None:
        self.columns: dict[str, str] = dict(columns)
        self.added: list[str] = []
        self.extra_column_type = extra_column_type
        self.rows = 0
        self.chunks = 0
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_", dir=directory))
        self._lock_fd: int | None = _hold_lock(self._dir)
        self.path = self._dir / "staging.duckdb"
        self._conn: duckdb.DuckDBPyConnection | None = duckdb.connect(
            str(self.path),
            config={"memory_limit": memory_limit, "threads": 1, "preserve_insertion_order": True},
        )
        self._conn.execute("SET TimeZone = 'UTC'")
        ddl = ", ".join(f"{quote_ident(n)} {t}" for n, t in self.columns.items())
        self._conn.execute(f"CREATE TABLE {STAGING_TABLE} ({ddl})")
        # One transaction for the whole staging, committed by `seal`: appends then go straight to the file
        # (DuckDB writes large transaction-local data optimistically) instead of through the WAL and a
        # checkpoint; measured 2.7 instead of 4.7 ms of CPU per 1,000 events. Closing unsealed discards it.
        self._conn.execute("BEGIN TRANSACTION")

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise RuntimeError("staging area is closed")
        return self._conn

    def append(self, chunk: Chunk) -> int:
        """Insert one chunk; returns its row count."""
        if isinstance(chunk, JsonPages):
            return self._append_pages(chunk)
        cols = to_columns(chunk)
        if not cols:
            return 0
        n = len(next(iter(cols.values())))
        if n == 0:
            return 0
        self._widen(cols)
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

    def _widen(self, names: Sequence[str] | Mapping[str, Any]) -> None:
        """Add the columns of ``names`` the staging table lacks (schema evolution)."""
        for name in names:
            if name not in self.columns:
                self.conn.execute(
                    f"ALTER TABLE {STAGING_TABLE} ADD COLUMN {quote_ident(name)} {self.extra_column_type}"
                )
                self.columns[name] = self.extra_column_type
                self.added.append(name)

    def _append_pages(self, chunk: JsonPages) -> int:
        """Raw pages: DuckDB parses and unnests them straight into the staging table."""
        if not len(chunk):
            return 0
        extras = new_keys(self.conn, chunk)
        self._widen([chunk.layout.extra_name(k) for k in extras])
        n = stage_pages(self.conn, STAGING_TABLE, chunk, extras)
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

    def head(self, n: int = 5) -> dict[str, list[Any]]:
        """The first ``n`` staged rows as ``{column: values}`` (for a materialization's preview)."""
        result = self.conn.execute(f"SELECT * FROM {STAGING_TABLE} LIMIT {int(n)}")
        names = [d[0] for d in result.description]
        rows = result.fetchall()
        return {name: [row[i] for row in rows] for i, name in enumerate(names)}

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
            self._conn.execute("COMMIT")
            self._conn.execute("CHECKPOINT")
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close and delete the staging file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StagingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def staging_root(database: str) -> Path | None:
    """Where the staging areas of ``database`` live: ``.klaviyo_staging`` next to the file (same disk,
    same permissions, swept with it); None (the system temp dir) for an in-memory database."""
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve().parent / STAGING_DIR


def _hold_lock(directory: Path) -> int | None:
    """Create ``owner.lock`` (with our pid, for humans) in ``directory`` and hold an exclusive flock on it."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _owner_dead(directory: Path) -> bool | None:
    """True when the area's owner is gone (its lock is free), False while it lives, None without a lock
    file (an area being created this instant, or one from a release before lock files)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        if fcntl is None:  # pragma: no cover - Windows: the pid written at creation
            try:
                pid = int(os.read(fd, 32) or b"0")
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                return True
            except OSError:
                return False
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: a live run is staging there
        return True
    finally:
        os.close(fd)


def _idle_seconds(directory: Path, now: float) -> float:
    newest = directory.stat().st_mtime
    for entry in directory.rglob("*"):
        try:
            newest = max(newest, entry.stat().st_mtime)
        except OSError:
            pass
    return now - newest


def _size(directory: Path) -> int:
    total = 0
    for entry in directory.rglob("*"):
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except OSError:
            pass
    return total


def sweep_stale(
    root: Path | str | None, *, legacy_idle_seconds: float = LEGACY_IDLE_SECONDS, logger: logging.Logger | None = None
) -> list[Path]:
    """Remove staging areas under ``root`` (None: the system temp dir) whose owner died; return them.

    An area whose ``owner.lock`` is still locked belongs to a live run and is never touched. One without a
    lock file is removed only when nothing in it changed for ``legacy_idle_seconds`` (an area is locked
    the instant after its directory is made, so only a pre-lock release leaves such a directory).
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    if not base.is_dir():
        return []
    removed: list[Path] = []
    freed = 0
    now = time.time()
    for directory in sorted(base.glob(f"{PREFIX}*")):
        if not directory.is_dir():
            continue
        try:
            dead = _owner_dead(directory)
            if dead is None:
                dead = _idle_seconds(directory, now) >= legacy_idle_seconds
            if not dead:
                continue
            size = _size(directory)
        except OSError:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            removed.append(directory)
            freed += size
    if removed:
        (logger or logging.getLogger(__name__)).info(
            "Removed %d staging area(s) (%.1f MB) left in %s by runs that were killed before cleaning up",
            len(removed), freed / 1e6, base,
        )  # fmt: skip
    return removed
