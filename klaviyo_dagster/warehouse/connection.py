"""Opening DuckDB connections to the warehouse file: one config everywhere, UTC, a log line on lock waits.

DuckDB lets one process write a database file at a time; dagster-duckdb's ``DuckDBResource`` retries the
connect silently for about 100 s, with waits that double without a cap. We connect ourselves: when the file
is locked we say so (with the path), retry with short capped waits for as long, and name the fix if it
stays locked.
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
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

_LOCK_MARKERS = ("lock", "Conflicting", "being used")


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOCK_MARKERS)


def _prepare(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    # Day boundaries and date_trunc are computed in UTC whatever the machine's zone.
    conn.execute("SET TimeZone = 'UTC'")
    return conn


LOCK_WAIT_SECONDS = 100.0  # as long as dagster-duckdb's own connect retry


def _connect(database: str, config: dict[str, Any], log: logging.Logger) -> duckdb.DuckDBPyConnection:
    """Connect; while another process holds the write lock, retry with short, capped, jittered waits.

    dagster-duckdb's retry doubles its wait without a cap (0.1 s, 0.2 s, ... 51 s): a step could sleep for
    seconds after a commit that took 0.2 s. Here the wait stays at most 0.5 s, within the same ~100 s.
    """
    try:
        return duckdb.connect(database, read_only=False, config=config)
    except (duckdb.IOException, RuntimeError) as exc:
        if not _is_lock_error(exc):
            raise
    log.warning(
        "DuckDB file %s is locked by another process (one writer at a time); waiting up to %.0f s for the "
        "write lock. If this persists, close the other process (e.g. a DuckDB shell or another run) or point "
        "KLAVIYO_DUCKDB_PATH elsewhere.",
        database, LOCK_WAIT_SECONDS,
    )  # fmt: skip
    started = time.monotonic()
    retrying = Retrying(
        stop=stop_after_delay(LOCK_WAIT_SECONDS),
        wait=wait_exponential_jitter(initial=0.05, max=0.5),
        retry=retry_if_exception(_is_lock_error),
        reraise=True,
    )
    try:
        conn = retrying(duckdb.connect, database, read_only=False, config=config)
    except (duckdb.IOException, RuntimeError) as exc:
        if not _is_lock_error(exc):
            raise
        raise RuntimeError(
            f"DuckDB file {database} stayed locked by another process for {LOCK_WAIT_SECONDS:.0f} s; close the "
            "other writer (a DuckDB shell, another run) or point KLAVIYO_DUCKDB_PATH elsewhere, then re-run"
        ) from exc
    log.info("Got the DuckDB write lock on %s after %.1f s", database, time.monotonic() - started)
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
    # dagster-duckdb's resource supplies the connection settings (its user agent and config handling).
    resource = DuckDBResource(database=database, connection_config=dict(connection_config or {}))
    conn = _connect(database, {"custom_user_agent": "dagster", **resource.connection_config}, log)
    try:
        yield _prepare(conn)
    finally:
        conn.close()
