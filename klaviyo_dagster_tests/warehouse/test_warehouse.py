"""The DuckDB warehouse on its own: partition replacement, atomicity, schema evolution, views, lock logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

UTC = timezone.utc
D1 = datetime(2026, 1, 1, tzinfo=UTC)
D2 = datetime(2026, 1, 2, tzinfo=UTC)
COLUMNS = {
    "id": "VARCHAR",
    "updated": "TIMESTAMPTZ",
    "properties": "JSON",
    "_partition": "TIMESTAMPTZ",
}


def rows(day: datetime, ids: list[str], version: int = 1) -> dict[str, list]:
    stamp = (day + timedelta(hours=version)).isoformat()
    return {
        "id": ids,
        "updated": [stamp] * len(ids),
        "properties": [f'{{"v": {version}, "name": "{i}"}}' for i in ids],
        "_partition": [day.isoformat()] * len(ids),
    }


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    return Warehouse(str(tmp_path / "sub" / "wh.duckdb"))


def count_by_partition(wh: Warehouse, table: str = "t") -> dict[str, int]:
    out = wh.query(f"SELECT _partition::DATE::VARCHAR, count(*) FROM klaviyo.{table} GROUP BY 1 ORDER BY 1")
    return dict(out)


def test_replace_partition_creates_table_and_replaces_only_that_day(wh: Warehouse) -> None:
    r1 = wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "b"]), rows(D1, ["c"])])
    assert (r1.rows, r1.chunks, r1.table) == (3, 2, "klaviyo.t")
    wh.replace_partitions("t", COLUMNS, "_partition", [D2], [rows(D2, ["d"])])
    assert count_by_partition(wh) == {"2026-01-01": 3, "2026-01-02": 1}

    # Re-materialising day 1 replaces exactly day 1.
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "x"], version=2)])
    assert count_by_partition(wh) == {"2026-01-01": 2, "2026-01-02": 1}
    got = wh.query(
        "SELECT id, properties->>'v', typeof(updated), typeof(_loaded_at) FROM klaviyo.t ORDER BY id"
    )
    assert got[0] == ("a", "2", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE")
    assert [g[0] for g in got] == ["a", "d", "x"]
    # JSON keeps the custom property's type.
    assert wh.query("SELECT json_type(properties->'v') FROM klaviyo.t WHERE id = 'a'") == [("UBIGINT",)]


def test_row_dicts_are_accepted_and_empty_write_clears_partition(wh: Warehouse) -> None:
    chunk = [
        {"id": "a", "updated": "2026-01-01T05:00:00+00:00", "_partition": "2026-01-01T00:00:00+00:00"},
        {"id": "b", "properties": '{"k": [1, "two"]}', "_partition": "2026-01-01T00:00:00+00:00"},
    ]
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [chunk])
    assert wh.query("SELECT id, updated IS NULL, properties IS NULL FROM klaviyo.t ORDER BY id") == [
        ("a", False, True),
        ("b", True, False),
    ]
    result = wh.replace_partitions("t", COLUMNS, "_partition", [D1], [])
    assert result.rows == 0
    assert wh.query("SELECT count(*) FROM klaviyo.t") == [(0,)]


def test_failure_mid_stream_leaves_table_unchanged(wh: Warehouse) -> None:
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "b"])])

    def exploding():
        yield rows(D1, ["new1"])
        raise RuntimeError("API went away")

    with pytest.raises(RuntimeError, match="API went away"):
        wh.replace_partitions("t", COLUMNS, "_partition", [D1], exploding())
    assert wh.query("SELECT id FROM klaviyo.t ORDER BY id") == [("a",), ("b",)]


def test_failure_inside_commit_rolls_back(wh: Warehouse) -> None:
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "b"])])
    bad = rows(D1, ["c"])
    bad["updated"] = ["not a timestamp"]
    with pytest.raises(duckdb.Error):
        wh.replace_partitions("t", COLUMNS, "_partition", [D1], [bad])
    assert wh.query("SELECT id FROM klaviyo.t ORDER BY id") == [("a",), ("b",)]


def test_rows_outside_the_partitions_are_refused(wh: Warehouse) -> None:
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a"])])
    with pytest.raises(ValueError, match="1 staged rows of t fall outside the partitions being replaced"):
        wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["b"]), rows(D2, ["c"])])
    assert wh.query("SELECT id FROM klaviyo.t") == [("a",)]


def test_schema_evolution_adds_columns(wh: Warehouse) -> None:
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a"])])
    chunk = rows(D2, ["b"])
    chunk["loyalty_tier"] = ['"gold"']
    result = wh.replace_partitions("t", COLUMNS, "_partition", [D2], [chunk])
    assert result.columns_added == ["loyalty_tier"]
    cols = wh.columns("t")
    assert cols["loyalty_tier"] == "JSON"
    assert wh.query("SELECT id, loyalty_tier->>'$' FROM klaviyo.t ORDER BY id") == [
        ("a", None),
        ("b", "gold"),
    ]
    # A declared column new to an existing table is added with its declared type.
    wider = {**COLUMNS, "score": "DOUBLE"}
    chunk = rows(D1, ["a"])
    chunk["score"] = [1.5]
    assert wh.replace_partitions("t", wider, "_partition", [D1], [chunk]).columns_added == ["score"]
    assert wh.columns("t")["score"] == "DOUBLE"


def test_dedupe_on_primary_key_keeps_last_and_current_view(wh: Warehouse) -> None:
    opts = {"primary_key": ["id"], "latest_by": ["updated"]}
    result = wh.replace_partitions(
        "t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "b"], 1), rows(D1, ["a"], 3)], **opts
    )
    assert (result.rows, result.deduplicated) == (2, 1)
    assert wh.query("SELECT properties->>'v' FROM klaviyo.t WHERE id='a'") == [("3",)]
    wh.replace_partitions("t", COLUMNS, "_partition", [D2], [rows(D2, ["a"], 2)], **opts)
    assert wh.query("SELECT count(*) FROM klaviyo.t") == [(3,)]
    current = wh.query("SELECT id, updated FROM klaviyo.t_current ORDER BY id")
    assert current == [("a", D2 + timedelta(hours=2)), ("b", D1 + timedelta(hours=1))]
    assert wh.table_exists("t_current") and not wh.table_exists("nope")


def test_read_chunks_streams(wh: Warehouse) -> None:
    ids = [f"id{i:05d}" for i in range(25_000)]
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ids[:12_000]), rows(D1, ids[12_000:])])
    sizes = [len(df) for df in wh.read_chunks("SELECT id FROM klaviyo.t ORDER BY id", chunk_rows=10_000)]
    assert sum(sizes) == 25_000 and len(sizes) >= 3 and max(sizes) <= 10_240


def test_resource_defaults_and_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_DUCKDB_PATH", str(tmp_path / "env" / "k.duckdb"))
    wh = WarehouseResource().get_warehouse()
    assert wh.database == str(tmp_path / "env" / "k.duckdb") and wh.schema == "klaviyo"
    wh.execute("CREATE SCHEMA IF NOT EXISTS klaviyo")
    assert (tmp_path / "env" / "k.duckdb").exists()
    monkeypatch.delenv("KLAVIYO_DUCKDB_PATH")
    assert WarehouseResource().resolved_database() == "data/warehouse.duckdb"
    assert WarehouseResource(database="x.duckdb", schema="s").get_warehouse().schema == "s"


def _hold_lock(path, seconds: float, sibling: bool = False) -> subprocess.Popen:
    """A process holding the write lock on ``path`` for ``seconds``; ``sibling``: started through an
    intermediate process, so it is not our child (as another run's step would be)."""
    code = textwrap.dedent(
        f"""
        import duckdb, sys, time
        c = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
        c.close()
        """
    )
    cmd = [sys.executable, "-c", code]
    if sibling:
        # A grandchild: its parent is not our parent, like a step of another run.
        cmd = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def test_a_short_lock_wait_is_not_a_warning(tmp_path, caplog) -> None:
    # Two steps of one run taking turns: the lock comes after a second or two; nothing is wrong.
    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = _hold_lock(path, 1.5)
    try:
        assert holder.stdout.readline().strip() == "locked"
        wh = Warehouse(str(path))
        with caplog.at_level(logging.DEBUG):
            wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a"])])
        assert wh.query("SELECT count(*) FROM klaviyo.t") == [(1,)]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
        assert f"DuckDB file {path} is locked by another process (PID {holder.pid}" in debug
        assert "Got the DuckDB write lock" in debug
    finally:
        holder.wait(timeout=30)


def test_a_long_lock_wait_warns_naming_the_holder(tmp_path, caplog, monkeypatch) -> None:
    from klaviyo_dagster.warehouse import connection

    monkeypatch.setattr(connection, "LOCK_WARN_AFTER_SECONDS", 0.5)
    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = _hold_lock(path, 2.5, sibling=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        wh = Warehouse(str(path))
        with caplog.at_level(logging.INFO):
            wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a"])])
        assert wh.query("SELECT count(*) FROM klaviyo.t") == [(1,)]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert f"DuckDB file {path} has been locked by another process (PID " in warnings[0]
        assert "python" in warnings[0] and "KLAVIYO_DUCKDB_PATH" in warnings[0]
        assert any("Got the DuckDB write lock" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        holder.wait(timeout=30)


def test_lock_holder_names_a_sibling_step_of_this_run(tmp_path) -> None:
    from klaviyo_dagster.warehouse.connection import lock_holder

    # The run's steps are children of one run worker: a holder whose parent is our parent is a sibling.
    # Here: two children of this test process, one asking about the other.
    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = _hold_lock(path, 60)  # ended below once the probe has seen the lock
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Meet the lock before the (slow, under load) import of the package, so the hold cannot lapse first.
        probe = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(
                f"""
                import duckdb
                try:
                    duckdb.connect({str(path)!r})
                    message = None
                except duckdb.IOException as exc:
                    message = str(exc)
                from klaviyo_dagster.warehouse.connection import lock_holder
                print(lock_holder(message) if message else "no lock met")
                """
            )],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == f"another step of this run (PID {holder.pid})"
        assert lock_holder("Conflicting lock is held in /usr/bin/python3 (PID 1)").startswith("another process (PID 1")
        assert lock_holder("Could not set lock on file") == "another process"
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_resource_refuses_a_file_named_like_the_schema(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"ambiguous.*Rename the file .*KLAVIYO_DUCKDB_PATH=data/warehouse.duckdb"):
        WarehouseResource(database=str(tmp_path / "klaviyo.duckdb")).get_warehouse()
    assert WarehouseResource(database=str(tmp_path / "klaviyo.duckdb"), schema="raw").get_warehouse().schema == "raw"


def test_default_file_name_clashing_with_schema_still_works(tmp_path) -> None:
    # data/klaviyo.duckdb: DuckDB names the catalog "klaviyo", like the schema; a bare klaviyo.t is
    # ambiguous, so the warehouse always qualifies fully.
    wh = Warehouse(str(tmp_path / "klaviyo.duckdb"))
    assert wh.qualified("t") == '"klaviyo"."klaviyo"."t"'
    assert wh.qualified("other.t") == '"klaviyo"."other"."t"'
    opts = {"primary_key": ["id"], "latest_by": ["updated"]}
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a", "b"])], **opts)
    wh.replace_partitions("t", COLUMNS, "_partition", [D1], [rows(D1, ["a"])], **opts)
    assert wh.query(f"SELECT id FROM {wh.qualified('t_current')}") == [("a",)]
    assert wh.table_exists("t") and list(wh.columns("t"))[:2] == ["id", "updated"]
    with pytest.raises(duckdb.BinderException, match="Ambiguous reference"):
        wh.query("SELECT * FROM klaviyo.t")
