"""Deletions: a profile deleted in Klaviyo (the sandbox's admin route) leaves `profiles_current` after the
sweep, with `deleted_at` in `profiles_deleted`; a sweep that read too little is refused; ids seen again
come back."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import requests

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource
from klaviyo_dagster.warehouse.deletions import SweepRefused, mark_deleted, record_sweep

UTC = timezone.utc


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with run_sandbox(seed=11, scale="300:100") as sb:
        yield sb


def _run(sb: Any, db: Path, keys: list[str], **kwargs: Any) -> dg.ExecuteInProcessResult:
    first, _ = sb.truth.date_range()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=["profiles"], schedule=False, start_date=first.strftime("%Y-%m-%d"))
    resources = {"klaviyo": KlaviyoResource(api_key=sb.api_key, base_url=sb.base_url, rate_limit_scale=0),
                 "warehouse": WarehouseResource(database=str(db))}
    return dg.materialize(list(defs.assets or []), selection=keys, resources=resources,
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, **kwargs)


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_deleted_profile_leaves_profiles_current(sandbox: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first, _ = sandbox.truth.date_range()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    landed = _run(sandbox, db, ["klaviyo/profiles"], tags={
        "dagster/asset_partition_range_start": first.strftime("%Y-%m-%d"),
        "dagster/asset_partition_range_end": today})
    assert landed.success
    ids = {r[0] for r in _query(db, "SELECT id FROM klaviyo.profiles_current")}
    assert ids == {p["id"] for p in sandbox.truth.records("profile")}
    gone = sorted(ids)[:3]
    # One through the admin route, two through the handle (the store function data-privacy jobs call).
    answer = requests.post(f"{sandbox.base_url}/__sandbox/delete-profile", json={"id": gone[0]}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"deleted": gone[0]}
    assert all(sandbox.delete_profile(pid) for pid in gone[1:])
    assert requests.post(f"{sandbox.base_url}/__sandbox/delete-profile", json={"id": gone[0]},
                         timeout=10).status_code == 404

    before = datetime.now(UTC)
    sandbox.reset_stats()
    swept = _run(sandbox, db, ["klaviyo/profiles_deleted"])
    assert swept.success
    meta = {k: v.value for k, v in swept.asset_materializations_for_node("klaviyo__profiles_deleted")[0].metadata.items()}
    assert (meta["seen"], meta["held"], meta["newly_deleted"]) == (len(ids) - 3, len(ids), 3)
    # The sweep reads ids only (sparse fieldset), 100 a page, without subscriptions.
    assert sandbox.stats()["GET /api/profiles"] == meta["requests"] == -(-(len(ids) - 3) // 100)
    current = {r[0] for r in _query(db, "SELECT id FROM klaviyo.profiles_current")}
    assert current == ids - set(gone)
    deleted = _query(db, "SELECT id, deleted_at FROM klaviyo.profiles_deleted ORDER BY id")
    assert [d[0] for d in deleted] == gone and all(d[1] >= before - timedelta(seconds=1) for d in deleted)
    # The history stays in klaviyo.profiles; only the view leaves them out.
    assert _query(db, f"SELECT count(*) FROM klaviyo.profiles WHERE id = '{gone[0]}'") == [(1,)]
    again = _run(sandbox, db, ["klaviyo/profiles_deleted"])  # a second sweep changes nothing
    assert again.success and _query(db, "SELECT count(*) FROM klaviyo.profiles_deleted") == [(3,)]


def test_sweep_guard_and_ids_seen_again(tmp_path: Path) -> None:
    wh = Warehouse(str(tmp_path / "g.duckdb"))
    day = datetime(2026, 3, 1, tzinfo=UTC)
    wh.replace_partitions(
        "things", {"id": "VARCHAR", "updated": "TIMESTAMPTZ", "_partition": "TIMESTAMPTZ"}, "_partition", [day],
        [{"id": [f"t{i}" for i in range(10)], "updated": [day] * 10, "_partition": [day] * 10}],
        primary_key=["id"], latest_by=["updated"], exclude_deleted=[("id", "things_deleted")])
    now = day + timedelta(days=3)
    with pytest.raises(SweepRefused, match="would mark 6 of the 10 held ids deleted"):
        record_sweep(wh, "things", "id", "updated", now, [["t0", "t1", "t2", "t3"]])
    assert wh.query(f"SELECT count(*) FROM {wh.qualified('things_deleted')}") == [(0,)]
    result = record_sweep(wh, "things", "id", "updated", now, [[f"t{i}" for i in range(8)]])
    assert (result.newly_deleted, result.deleted_total) == (2, 2)
    assert wh.query(f"SELECT count(*) FROM {wh.qualified('things_current')}") == [(8,)]
    result = record_sweep(wh, "things", "id", "updated", now + timedelta(days=7), [[f"t{i}" for i in range(9)]])
    assert (result.restored, result.deleted_total) == (1, 1)  # t8 is back
    assert mark_deleted(wh, "things", ["t0", "t9"], now) == 1  # t9 was already recorded
    assert {r[0] for r in wh.query(f"SELECT id FROM {wh.qualified('things_current')}")} == {
        f"t{i}" for i in range(1, 9)}
