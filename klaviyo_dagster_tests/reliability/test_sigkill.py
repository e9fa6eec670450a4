"""SIGKILL a real ingest run during fetch, staging and commit: the partitions hold their previous contents
or the new ones whole, the re-run completes, and nothing is left behind (staging lives in the warehouse's
folder and is swept at the next write; a live run's staging is never swept)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse
from klaviyo_dagster.warehouse.staging import STAGING_DIR, StagingArea, sweep_stale
from klaviyo_dagster_tests.reliability.common import first_day, ingest, key, truth_rows, warehouse_rows

OBJECT = "events"
START = first_day() + timedelta(days=2)
END = START + timedelta(days=4)


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    with run_sandbox(seed=7, scale="small", rate_limits="off") as h:
        yield h


def loaded_stamps(db: Path) -> set:
    wh = Warehouse(str(db))
    if not wh.table_exists(OBJECT):
        return set()
    rows = wh.query(f"SELECT DISTINCT _loaded_at FROM {wh.qualified(OBJECT)} WHERE _partition BETWEEN ? AND ?",
                    [START, END])
    return {r[0] for r in rows}


def assert_whole(handle: Any, db: Path) -> None:
    """The partitions equal the sandbox's truth: ids and cursor values, none lost, none doubled."""
    assert warehouse_rows(Warehouse(str(db)), OBJECT, START, END) == truth_rows(handle, OBJECT, START, END)


def leftovers(folder: Path) -> list[str]:
    """Everything in the warehouse's folder except the database file itself and an empty staging root."""
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name == "warehouse.duckdb":
            continue
        if entry.name == STAGING_DIR and not any(entry.iterdir()):
            continue
        out.append(entry.name if entry.name != STAGING_DIR else f"{STAGING_DIR}/{[p.name for p in entry.iterdir()]}")
    return out


def run_child(handle: Any, tmp_path: Path, db: Path, *, pause_at: str | None, kill_after: str | None,
              delay: float = 0.0) -> list[str]:
    """Start a real run in a child process, SIGKILL it once ``kill_after`` is marked (plus ``delay`` s) and
    return the marks it reached. ``kill_after=None``: kill after two pages were served (mid-fetch)."""
    marker = tmp_path / f"marks-{time.monotonic_ns()}"
    cfg = tmp_path / "child.json"
    cfg.write_bytes(orjson.dumps({
        "base_url": handle.base_url, "api_key": handle.api_key, "database": str(db), "object": OBJECT,
        "start_date": key(first_day() - timedelta(days=5)), "first": key(START), "last": key(END),
        "marker": str(marker), "pause_at": pause_at, "hold": 60.0,
    }))
    served_before = handle.stats().get("GET /api/events", 0)
    child = subprocess.Popen([sys.executable, "-m", "klaviyo_dagster_tests.reliability.kill_child", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and child.poll() is None:
            marks = marker.read_text().split() if marker.exists() else []
            if kill_after is None and handle.stats().get("GET /api/events", 0) - served_before >= 2:
                break
            if kill_after is not None and kill_after in marks:
                break
            time.sleep(0.002)
        else:
            raise AssertionError(f"the child never reached {kill_after or 'its second page'}: "
                                 f"{child.stderr.read().decode()[-2000:] if child.poll() is not None else 'timeout'}")
        if delay:
            time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return marker.read_text().split() if marker.exists() else []


@pytest.mark.parametrize(
    ("phase", "pause_at"),
    [("fetch", None), ("staged", "staged"), ("commit-begin", "commit-begin"), ("commit-inserted", "commit-inserted")],
)
def test_sigkill_leaves_previous_partitions_and_no_staging(handle: Any, tmp_path: Path, phase: str,
                                                           pause_at: str | None) -> None:
    db = tmp_path / "wh" / "warehouse.duckdb"
    assert ingest(handle, db, OBJECT, START, END).success
    before = loaded_stamps(db)
    assert len(before) == 1
    assert_whole(handle, db)

    if phase == "fetch":  # slow pages: the kill lands while pages are still being read and staged
        handle.faults.configure({"spec": "GET /api/events=slow:1.0@0.2"})
    try:
        marks = run_child(handle, tmp_path, db, pause_at=pause_at, kill_after=None if phase == "fetch" else phase)
    finally:
        handle.faults.configure({"spec": ""})
    assert "done" not in marks and (phase == "fetch" or phase in marks)
    if phase == "fetch":
        assert "commit-begin" not in marks
    # Killed before its commit: the previous contents, exactly (same rows, same load).
    assert loaded_stamps(db) == before
    assert_whole(handle, db)
    staging = db.parent / STAGING_DIR
    left = list(staging.iterdir())
    assert len(left) == 1 and left[0].name.startswith("klaviyo_staging_")  # the dead run's area ...

    result = ingest(handle, db, OBJECT, START, END)  # ... and the re-run completes and sweeps it
    assert result.success
    after = loaded_stamps(db)
    assert len(after) == 1 and after != before
    assert_whole(handle, db)
    assert leftovers(db.parent) == []


def test_sigkill_at_random_moments_of_the_commit(handle: Any, tmp_path: Path) -> None:
    """Kills a few ms into the commit: each leaves the old load or the new one whole, never a mix."""
    db = tmp_path / "wh" / "warehouse.duckdb"
    assert ingest(handle, db, OBJECT, START, END).success
    outcomes = []
    for delay in (0.0, 0.02):
        before = loaded_stamps(db)
        marks = run_child(handle, tmp_path, db, pause_at=None, kill_after="commit-begin", delay=delay)
        stamps = loaded_stamps(db)
        assert len(stamps) == 1, f"a mix of loads after a kill {delay} s into the commit: {stamps}"
        assert_whole(handle, db)
        outcomes.append("old" if stamps == before else "new")
        assert "done" not in marks or outcomes[-1] == "new"
    assert "old" in outcomes  # at least one kill landed before the commit finished
    assert ingest(handle, db, OBJECT, START, END).success
    assert_whole(handle, db)
    assert leftovers(db.parent) == []


def test_sweep_never_touches_a_live_runs_staging(tmp_path: Path) -> None:
    root = tmp_path / STAGING_DIR
    live = StagingArea({"id": "VARCHAR"}, directory=str(root))
    live.append({"id": ["a"]})
    dead = root / "klaviyo_staging_999999_x"  # a killed run's area: lock file present, lock free
    dead.mkdir()
    (dead / "owner.lock").write_text("999999")
    (dead / "staging.duckdb").write_bytes(b"\0" * 4096)
    fresh = root / "klaviyo_staging_1_y"  # no lock file yet, just made: kept (it may be mid-creation)
    fresh.mkdir()
    try:
        removed = sweep_stale(root)
        assert removed == [dead]
        assert live.path.exists() and fresh.exists()
        assert live.append({"id": ["b"]}) == 1
        old = time.time() - 7 * 3600  # idle for hours without a lock file: a pre-lock release's leftover
        os.utime(fresh, (old, old))
        assert sweep_stale(root) == [fresh]
    finally:
        live.close()
    assert list(root.iterdir()) == []
