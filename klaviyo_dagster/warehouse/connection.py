"""Opening DuckDB connections to the warehouse file: one config everywhere, UTC, a log line on lock waits.

DuckDB lets one process write a database file at a time; dagster-duckdb's ``DuckDBResource`` retries the
connect silently for about 100 s when another process holds the lock. We try once ourselves first, and
when the file is locked we say so (with the path) before handing over to the resource's retry loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from dagster_duckdb import DuckDBResource

_LOCK_MARKERS = ("lock", "Conflicting", "being used")


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOCK_MARKERS)


def _prepare(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    # Day boundaries and date_trunc are computed in UTC whatever the machine's zone.
    conn.execute("SET TimeZone = 'UTC'")
    return conn


@contextmanager
def open_connection(
    database: str, connection_config: dict[str, Any] | None = None, logger: logging.Logger | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``database`` (parent directory created), closed on exit.

    Logs a warning naming the file while it waits for another process's write lock.
    """
    log = logger or logging.getLogger(__name__)
    if database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    resource = DuckDBResource(database=database, connection_config=dict(connection_config or {}))
    config = {"custom_user_agent": "dagster", **resource.connection_config}
    try:
        conn = duckdb.connect(database, read_only=False, config=config)
    except (duckdb.IOException, RuntimeError) as exc:
        if not _is_lock_error(exc):
            raise
        log.warning(
            "DuckDB file %s is locked by another process (one writer at a time); waiting up to ~100 s "
            "for the write lock. If this persists, close the other process (e.g. a DuckDB shell or "
            "another run) or point KLAVIYO_DUCKDB_PATH elsewhere.",
            database,
        )
        started = time.monotonic()
        with resource.get_connection() as conn:
            log.info("Got the DuckDB write lock on %s after %.1f s", database, time.monotonic() - started)
            try:
                yield _prepare(conn)
            finally:
                conn.close()  # the resource does not close when the body raises
        return
    try:
        yield _prepare(conn)
    finally:
        conn.close()
