"""Two Klaviyo accounts in one code location and one warehouse: each keeps its own registry of the lists the
package created (keyed by the key prefix), so one account never takes another's list for its own."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster.activate import build_activation_assets
from klaviyo_dagster.activate.state import LIST_REGISTRY
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.translator import DagsterKlaviyoTranslator
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

ACCOUNTS = {"klaviyo": ("klaviyo", "inputs_us.audience"), "klaviyo_eu": ("klaviyo_eu", "inputs_eu.audience")}


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict]:
    # One seed for both: the ids the two accounts give to the lists created in them collide, as ids of two
    # accounts may; a registry shared between accounts would then mistake one account's list for the other's.
    with run_sandbox(seed=11) as us, run_sandbox(seed=11) as eu:
        yield {"klaviyo": us, "klaviyo_eu": eu}


def _list_syncs() -> dict[str, dg.AssetsDefinition]:
    out = {}
    for prefix, (resource_key, audience) in ACCOUNTS.items():
        assets = build_activation_assets(
            f"{audience}_people", audience, source_schema=prefix, klaviyo_resource_key=resource_key,
            translator=DagsterKlaviyoTranslator(key_prefix=[prefix]), known_profiles_table="nowhere.none")
        out[prefix] = next(a for a in assets if isinstance(a, dg.AssetsDefinition)
                           and a.key == dg.AssetKey([prefix, "list_membership_sync"]))
    return out


def _audience(warehouse: Warehouse, table: str, name: str, profile_ids: list[str]) -> None:
    warehouse.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    warehouse.execute(f"CREATE OR REPLACE TABLE {table} (list_name VARCHAR, profile_id VARCHAR)")
    for pid in profile_ids:
        warehouse.execute(f"INSERT INTO {table} VALUES (?, ?)", [name, pid])


def _lists_named(handle, name: str) -> list[str]:
    return sorted(r["id"] for r in handle.truth.records("list") if r["attributes"].get("name") == name)


def test_each_account_keeps_its_own_list_ids(accounts, tmp_path: Path) -> None:
    db = str(tmp_path / "warehouse.duckdb")
    warehouse = Warehouse(db)
    resources = {"warehouse": WarehouseResource(database=db)} | {
        key: KlaviyoResource(api_key=h.api_key, base_url=h.base_url, rate_limit_scale=0)
        for key, h in accounts.items()}
    syncs = _list_syncs()
    people = {p: [r["id"] for r in h.truth.records("profile")][:3] for p, h in accounts.items()}

    def sync(prefix: str) -> dg.ExecuteInProcessResult:
        return dg.materialize([syncs[prefix]], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                              raise_on_error=False)

    # Both accounts sync a list of one name: each creates it in its own account, the registry keeps both.
    for prefix, (_, audience) in ACCOUNTS.items():
        _audience(warehouse, audience, "Loyal", people[prefix])
        assert sync(prefix).success
    loyal = {p: _lists_named(h, "Loyal") for p, h in accounts.items()}
    assert all(len(ids) == 1 for ids in loyal.values())
    for prefix, handle in accounts.items():
        assert {pid for pid, _ in handle.truth.members("list", loyal[prefix][0])} == set(people[prefix])
    assert sorted(warehouse.query(f"SELECT account, list_id FROM {LIST_REGISTRY} WHERE list_name = 'Loyal'")) == \
        sorted((p, ids[0]) for p, ids in loyal.items())
    # Re-runs find their own list: nothing created, nothing sent.
    for prefix in ACCOUNTS:
        result = sync(prefix)
        mat = result.asset_materializations_for_node(f"{prefix}__list_membership_sync")[0]
        assert (mat.metadata["sent"].value, mat.metadata["unchanged"].value) == (0, 3)
    assert {p: _lists_named(h, "Loyal") for p, h in accounts.items()} == loyal

    # The first account creates "VIP"; in the second, two lists named "VIP" exist that the package did not
    # create, one of them with the id of the first account's. The second account must not take it for its
    # own: the name is ambiguous there, and the sync says so instead of writing to someone else's list.
    _audience(warehouse, ACCOUNTS["klaviyo"][1], "VIP", people["klaviyo"])
    assert sync("klaviyo").success
    (us_vip,) = _lists_named(accounts["klaviyo"], "VIP")
    with KlaviyoClient(accounts["klaviyo_eu"].api_key, base_url=accounts["klaviyo_eu"].base_url) as client:
        theirs = [client.post("/api/lists", {"data": {"type": "list", "attributes": {"name": "VIP"}}})["data"]["id"]
                  for _ in range(2)]
    assert us_vip in theirs  # the collision this test is about
    _audience(warehouse, ACCOUNTS["klaviyo_eu"][1], "VIP", people["klaviyo_eu"])
    result = sync("klaviyo_eu")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "2 Klaviyo lists are named 'VIP'" in str(failure.event_specific_data.error)
    for list_id in theirs:
        assert accounts["klaviyo_eu"].truth.members("list", list_id) == []  # untouched
    assert warehouse.query(f"SELECT account FROM {LIST_REGISTRY} WHERE list_name = 'VIP'") == [("klaviyo",)]
