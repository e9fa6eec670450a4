"""A multiprocess backfill: three worker processes materialize 14 daily partitions of three objects into
ONE DuckDB file at once, against a sandbox enforcing Klaviyo's real rate limits. Every run succeeds, no
row is duplicated or lost, the account's limits hold (the sandbox answered at most 1 % 429s), and every
wait for DuckDB's single-writer lock was logged and short."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse
from klaviyo_dagster_tests.reliability.common import (
    first_day,
    key,
    lost_and_doubled,
    truth_rows,
    warehouse_rows,
)

OBJECTS = ["profiles", "events", "templates"]
WORKERS = 3
DAYS = [first_day() + timedelta(days=1 + i) for i in range(14)]


class StatusCounter:
    """A sandbox recorder: the status of every /api/ answer, as the server sent it."""

    def __init__(self) -> None:
        self.statuses: Counter = Counter()

    def record(self, op_key: str, method: str, status: int, body: bytes, query: Any) -> None:
        self.statuses[status] += 1


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    with run_sandbox(seed=5, scale="small", rate_limits="real") as h:
        yield h


def test_multiprocess_backfill_into_one_duckdb_file(handle: Any, tmp_path: Path) -> None:
    counter = StatusCounter()
    handle.recorder = counter
    db = tmp_path / "wh" / "warehouse.duckdb"
    procs = []
    for w in range(WORKERS):
        cfg = tmp_path / f"worker{w}.json"
        cfg.write_bytes(orjson.dumps({
            "base_url": handle.base_url, "api_key": handle.api_key, "database": str(db), "objects": OBJECTS,
            "start_date": key(first_day() - timedelta(days=5)), "partitions": [key(d) for d in DAYS[w::WORKERS]],
        }))
        procs.append(subprocess.Popen([sys.executable, "-m", "klaviyo_dagster_tests.reliability.backfill_child",
                                       str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        reports.append(orjson.loads(out.decode().strip().splitlines()[-1]))
    handle.recorder = None

    assert sum(r["runs"] for r in reports) == len(DAYS)
    assert [f for r in reports for f in r["failures"]] == []
    wh = Warehouse(str(db))
    for name in OBJECTS:
        got = warehouse_rows(wh, name, DAYS[0], DAYS[-1])
        want = truth_rows(handle, name, DAYS[0], DAYS[-1])
        assert lost_and_doubled(got, want) == (0, 0), name
        assert {day for _, _, day in got} <= {d.date().isoformat() for d in DAYS}
    answered = sum(counter.statuses.values())
    assert answered >= len(DAYS) * len(OBJECTS)
    assert counter.statuses[429] <= 0.01 * answered, counter.statuses
    # Lock waits: whenever a worker waited for the file it said so, and every wait ended well within the cap.
    waits = [float(m) for r in reports for msg in r["lock_messages"]
             for m in re.findall(r"write lock on .* after ([0-9.]+) s", msg)]
    print(f"\nbackfill: {len(DAYS)} partitions x {len(OBJECTS)} objects by {WORKERS} processes, "
          f"{answered} answers ({counter.statuses[429]} 429s), {len(waits)} lock waits, longest "
          f"{max(waits, default=0):.1f} s")
    assert all(w < 30 for w in waits)
