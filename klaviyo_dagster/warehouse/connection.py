"""Opening DuckDB connections to the warehouse file: one config everywhere, UTC, a warning on long lock waits.

DuckDB lets one process write a database file at a time; dagster-duckdb's ``DuckDBResource`` retries the
connect silently for about 100 s, with waits that double without a cap. We connect ourselves: when the file
is locked we retry with short capped waits for as long; a wait of a few seconds is routine (steps of one run
take turns) and logged at DEBUG; a longer one is a WARNING naming the file and the holder ("another step of
this run", or the PID and command of another process); if it stays locked the error names the fix.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from dagster_duckdb import DuckDBResource
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

_LOCK_MARKERS = ("lock", "Conflicting", "being used")


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOCK_MARKERS)


def _prepare(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    # Day boundaries and date_trunc are computed in UTC whatever the machine's zone.
    conn.execute("SET TimeZone = 'UTC'")
    return conn


LOCK_WAIT_SECONDS = 100.0  # as long as dagster-duckdb's own connect retry
# A wait shorter than this is routine (two steps of one run taking turns): logged at DEBUG, never a WARNING.
LOCK_WARN_AFTER_SECONDS = 5.0
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


def _proc_parent(pid: int) -> int | None:
    """Parent PID of ``pid`` (Linux /proc; None elsewhere or when the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 4 after the parenthesised command name (which may itself contain spaces or parentheses).
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def _proc_command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:120]


def lock_holder(message: str) -> str:
    """Who holds the write lock, from DuckDB's error text: "another step of this run" when the holder is a
    sibling process (a step of the same multiprocess run), else its PID and command line when known."""
    m = _HOLDER_PID.search(message)
    if not m:
        return "another process"
    pid = int(m.group(1))
    if pid == os.getpid():
        return "this process (another connection that was not closed)"
    parent = _proc_parent(pid)
    if parent is not None and parent == os.getppid() and parent != 1:
        return f"another step of this run (PID {pid})"
    command = _proc_command(pid)
    return f"another process (PID {pid}{': ' + command if command else ''})"


def _connect(database: str, config: dict[str, Any], log: logging.Logger) -> duckdb.DuckDBPyConnection:
    """Connect; while another process holds the write lock, retry with short, capped, jittered waits.

    dagster-duckdb's retry doubles its wait without a cap (0.1 s, 0.2 s, ... 51 s): a step could sleep for
    seconds after a commit that took 0.2 s. Here the wait stays at most 0.5 s, within the same ~100 s.
    Waiting is normal when two steps take turns on the file: a WARNING is logged only once the wait passes
    ``LOCK_WARN_AFTER_SECONDS``, naming the holder; shorter waits are DEBUG lines.
    """
    try:
        return duckdb.connect(database, read_only=False, config=config)
    except (duckdb.IOException, RuntimeError) as exc:
        if not _is_lock_error(exc):
            raise
        holder = lock_holder(str(exc))
    started = time.monotonic()
    warned = False

    def _before_sleep(state: RetryCallState) -> None:
        nonlocal warned, holder
        if state.outcome is not None and state.outcome.failed:
            holder = lock_holder(str(state.outcome.exception()))
        waited = time.monotonic() - started
        if not warned and waited >= LOCK_WARN_AFTER_SECONDS:
            warned = True
            log.warning(
                "DuckDB file %s has been locked by %s for %.0f s (one writer at a time); waiting up to %.0f s "
                "for the write lock. If this persists, close the other process (e.g. a DuckDB shell or another "
                "run) or point KLAVIYO_DUCKDB_PATH elsewhere.",
                database, holder, waited, LOCK_WAIT_SECONDS,
            )  # fmt: skip

    log.debug("DuckDB file %s is locked by %s; waiting for the write lock", database, holder)
    retrying = Retrying(
        stop=stop_after_delay(LOCK_WAIT_SECONDS),
        wait=wait_exponential_jitter(multiplier=0.05, max=0.5),
        retry=retry_if_exception(_is_lock_error),
        before_sleep=_before_sleep,
        reraise=True,
    )
    try:
        conn = retrying(duckdb.connect, database, read_only=False, config=config)
    except (duckdb.IOException, RuntimeError) as exc:
        if not _is_lock_error(exc):
            raise
        raise RuntimeError(
            f"DuckDB file {database} stayed locked by {lock_holder(str(exc))} for {LOCK_WAIT_SECONDS:.0f} s; "
            "close the other writer (a DuckDB shell, another run) or point KLAVIYO_DUCKDB_PATH elsewhere, "
            "then re-run"
        ) from exc
    waited = time.monotonic() - started
    (log.info if warned else log.debug)(
        "Got the DuckDB write lock on %s after %.1f s (held by %s)", database, waited, holder
    )
    return conn


@contextmanager
def open_connection(
    database: str, connection_config: dict[str, Any] | None = None, logger: logging.Logger | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``database`` (parent directory created), closed on exit.

    Logs a warning naming the file and the holder when another process keeps the write lock for seconds.
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
