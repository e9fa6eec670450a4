"""klaviyo/list_membership_sync against the sandbox over HTTP: lists converge, guards hold, dry run is inert."""

import pytest
from dagster import Failure, materialize

from klaviyo_dagster.activate import ActivationRefused, ListSyncSettings, run_list_sync
from klaviyo_dagster.activate.list_sync import build_list_sync_asset
from klaviyo_dagster.activate.state import LIST_LOG, LIST_REGISTRY
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource
from klaviyo_dagster_tests.activate.conftest import load_known_profiles, write_calls


@pytest.fixture(scope="module")
def known(sandbox, warehouse):
    """Ingested-profile stand-in; returns profiles that have an email, in a stable order."""
    frame = load_known_profiles(sandbox, warehouse)
    return frame[frame["email"].notna()].sort_values("id").reset_index(drop=True)


def _members(sandbox, list_id: str) -> set[str]:
    return {pid for pid, _ in sandbox.truth.members("list", list_id)}


def _set_audience(warehouse, table: str, rows: list[tuple]) -> None:
    """rows: (list_name, profile_id, email)."""
    warehouse.execute(f"CREATE OR REPLACE TABLE {table} (list_name VARCHAR, profile_id VARCHAR, email VARCHAR)")
    if rows:
        values = ", ".join("(" + ", ".join("NULL" if v is None else "'" + v + "'" for v in r) + ")" for r in rows)
        warehouse.execute(f"INSERT INTO {table} VALUES {values}")


def _ids_by_email(sandbox, emails: list[str]) -> dict[str, str]:
    wanted = set(emails)
    return {p["attributes"]["email"]: p["id"] for p in sandbox.truth.records("profile")
            if p["attributes"].get("email") in wanted}


def test_list_is_created_once_converges_to_the_audience_and_a_rerun_is_a_noop(
    sandbox, warehouse, known, new_client, caplog
):
    name = "Activation test A"
    by_id = list(known["id"][:6])
    by_email = list(known["email"][6:8])  # known to the warehouse only by email
    newcomers = ["new1@ls-a.example.com", "new2@ls-a.example.com"]  # unknown everywhere: imported
    rows = [(name, pid, None) for pid in by_id] + [(name, None, e) for e in by_email + newcomers]
    _set_audience(warehouse, "inputs.aud_a", rows)
    settings = ListSyncSettings(table="inputs.aud_a")

    client = new_client()
    first = run_list_sync(client, warehouse, settings, run_id="a1")
    plan = first.lists[0]
    assert (plan.created, plan.adds, plan.imports, plan.removes, plan.import_failed) == (True, 8, 2, 0, 0)
    assert client.stats.by_endpoint["POST /api/lists"] == 1
    assert client.stats.by_endpoint["POST /api/lists/{id}/relationships/profiles"] == 1
    new_ids = _ids_by_email(sandbox, newcomers)
    expected = set(by_id) | set(known["id"][6:8]) | set(new_ids.values())
    assert len(new_ids) == 2 and _members(sandbox, plan.list_id) == expected
    assert warehouse.query(f"SELECT list_id FROM {LIST_REGISTRY} WHERE list_name = ?", [name]) == [(plan.list_id,)]

    client = new_client()
    caplog.set_level("INFO", logger="klaviyo_dagster.activate.list_sync")
    again = run_list_sync(client, warehouse, settings, run_id="a2")
    assert (again.lists[0].kept, again.lists[0].adds, again.lists[0].removes, again.lists[0].imports) == (10, 0, 0, 0)
    assert write_calls(client) == 0
    # The run says what it read, what it left alone and why, and that it sent nothing.
    assert caplog.records[-1].getMessage() == (
        "read 10 audience rows from inputs.aud_a for 1 list(s); 10 unchanged (already members in Klaviyo, left "
        "alone); nothing to send: Klaviyo's membership already equals the audience")

    # one member leaves, one joins (10% < the 20% guard)
    rows = [r for r in rows if r[1] != by_id[0]] + [(name, known["id"][20], None)]
    _set_audience(warehouse, "inputs.aud_a", rows)
    client = new_client()
    third = run_list_sync(client, warehouse, settings, run_id="a3")
    assert (third.lists[0].adds, third.lists[0].removes) == (1, 1)
    assert caplog.records[-1].getMessage().endswith("; sent 1 adds, 1 removes, 0 imports of unknown people")
    assert write_calls(client) == 2
    expected = (expected - {by_id[0]}) | {known["id"][20]}
    assert _members(sandbox, plan.list_id) == expected
    changes = warehouse.query(f"SELECT action, profile_id FROM {LIST_LOG} WHERE run_id = 'a3' ORDER BY action")
    assert changes == [("add", known["id"][20]), ("remove", by_id[0])]
    client = new_client()
    assert run_list_sync(client, warehouse, settings).lists[0].kept == 10 and write_calls(client) == 0

    # a warehouse that lost the registry finds the list by name instead of creating a second one
    fresh = Warehouse(warehouse.database.replace("wh.duckdb", "fresh.duckdb"))
    fresh.execute("CREATE SCHEMA inputs")
    with fresh.transaction() as con:
        con.execute(f"ATTACH '{warehouse.database}' AS src (READ_ONLY)")
        con.execute("CREATE TABLE inputs.aud_a AS SELECT * FROM src.inputs.aud_a")
    client = new_client()
    again = run_list_sync(client, fresh, ListSyncSettings(table="inputs.aud_a", known_profiles_table=None))
    assert again.lists[0].list_id == plan.list_id and not again.lists[0].created
    assert client.stats.by_endpoint["POST /api/lists"] == 0 and write_calls(client) == 0


def test_guards_refuse_large_removals_and_empty_audiences_and_dry_run_writes_nothing(
    sandbox, warehouse, known, new_client
):
    name = "Activation test B"
    ids = list(known["id"][30:40])
    _set_audience(warehouse, "inputs.aud_b", [(name, pid, None) for pid in ids])
    settings = ListSyncSettings(table="inputs.aud_b")
    list_id = run_list_sync(new_client(), warehouse, settings).lists[0].list_id
    assert _members(sandbox, list_id) == set(ids)

    _set_audience(warehouse, "inputs.aud_b", [(name, pid, None) for pid in ids[:5]])
    client = new_client()
    with pytest.raises(ActivationRefused, match=r"remove 5 of 10 members \(50%\).*allow_large_removal=True"):
        run_list_sync(client, warehouse, settings)
    assert write_calls(client) == 0 and _members(sandbox, list_id) == set(ids)

    client = new_client()
    dry = run_list_sync(client, warehouse, ListSyncSettings(table="inputs.aud_b", dry_run=True))
    assert (dry.lists[0].removes, dry.lists[0].adds, dry.dry_run) == (5, 0, True)
    assert write_calls(client) == 0 and _members(sandbox, list_id) == set(ids)

    allowed = run_list_sync(new_client(), warehouse,
                            ListSyncSettings(table="inputs.aud_b", allow_large_removal=True))
    assert allowed.lists[0].removes == 5 and _members(sandbox, list_id) == set(ids[:5])

    _set_audience(warehouse, "inputs.aud_b", [])
    client = new_client()
    with pytest.raises(ActivationRefused, match="is empty.*allow_empty_audience=True"):
        run_list_sync(client, warehouse, settings)
    assert client.stats.requests == 0 and _members(sandbox, list_id) == set(ids[:5])


def test_existing_list_by_id_loses_members_outside_the_audience(sandbox, warehouse, known, new_client):
    lists = sorted(sandbox.truth.records("list"), key=lambda r: r["id"])
    target = next(lst for lst in lists if 150 <= len(sandbox.truth.members("list", lst["id"])) <= 5_000)
    current = [pid for pid, _ in sandbox.truth.members("list", target["id"])]
    outsider = next(pid for pid in known["id"] if pid not in set(current))
    keep = current[1:]
    warehouse.execute("CREATE OR REPLACE TABLE inputs.aud_c (list_id VARCHAR, profile_id VARCHAR)")
    warehouse.execute("INSERT INTO inputs.aud_c SELECT ?, unnest(?::VARCHAR[])",
                      [target["id"], [*keep, outsider]])

    client = new_client()
    result = run_list_sync(client, warehouse, ListSyncSettings(table="inputs.aud_c"))
    plan = result.lists[0]
    assert (plan.list_id, plan.members_before, plan.kept, plan.adds, plan.removes) == (
        target["id"], len(current), len(keep), 1, 1)
    # 100 a page, read twice: the plan's snapshot and the read-back that verifies the sync (difference 0)
    assert client.stats.by_endpoint["GET /api/lists/{id}/profiles"] == 2 * -(-len(current) // 100)
    assert (plan.verified, plan.missing, plan.extra, plan.difference) == (True, 0, 0, 0)
    assert _members(sandbox, target["id"]) == set(keep) | {outsider}


def test_asset_fails_clearly_when_a_guard_trips_and_reports_metadata(sandbox, warehouse, known):
    name = "Activation test D"
    ids = list(known["id"][50:55])
    _set_audience(warehouse, "inputs.aud_d", [(name, pid, None) for pid in ids])
    asset = build_list_sync_asset("inputs.aud_d")
    resources = {"klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url),
                 "warehouse": WarehouseResource(database=warehouse.database)}
    op = "klaviyo__list_membership_sync"
    meta = materialize([asset], resources=resources).asset_materializations_for_node(op)[0].metadata
    assert {k: meta[k].value for k in ("adds", "removes", "imports", "unchanged", "sent", "failed")} == {
        "adds": 5, "removes": 0, "imports": 0, "unchanged": 0, "sent": 5, "failed": 0}
    assert meta["duration_s"].value >= 0 and meta["plan"].value[0]["list_name"] == name

    _set_audience(warehouse, "inputs.aud_d", [(name, ids[0], None)])
    with pytest.raises(Failure, match="remove 4 of 5 members"):
        materialize([asset], resources=resources)
    refused = materialize([asset], resources=resources, raise_on_error=False)
    assert not refused.success
    meta = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {
        "max_remove_share": 0.9}}}}).asset_materializations_for_node(op)[0].metadata
    assert meta["removes"].value == 4


def test_a_failed_list_create_is_retried_without_making_a_second_list(sandbox, warehouse, known, new_client):
    name = "Activation test E"
    _set_audience(warehouse, "inputs.aud_e", [(name, pid, None) for pid in known["id"][60:63]])
    sandbox.faults.configure({"spec": "POST /api/lists=503:next2"})
    client = new_client()
    try:
        result = run_list_sync(client, warehouse, ListSyncSettings(table="inputs.aud_e"))
    finally:
        sandbox.faults.configure({"spec": ""})
    assert client.stats.by_endpoint["POST /api/lists"] == 3  # two 503s, then the create
    same_name = [lst["id"] for lst in sandbox.truth.records("list") if lst["attributes"]["name"] == name]
    assert same_name == [result.lists[0].list_id]
    assert _members(sandbox, same_name[0]) == set(known["id"][60:63])
    again = new_client()
    run_list_sync(again, warehouse, ListSyncSettings(table="inputs.aud_e"))
    assert write_calls(again) == 0
