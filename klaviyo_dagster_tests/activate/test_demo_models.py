"""Demo models build activation inputs from ingested tables; activating them changes what Klaviyo serves."""

from collections import Counter

import orjson
import pandas as pd
from dagster import materialize

from klaviyo_dagster.activate import (
    ListSyncSettings,
    ProfileImportSettings,
    run_list_sync,
    run_profile_import,
)
from klaviyo_dagster.activate.demo_models import DEFAULT_VIP_LIST, build_demo_model_assets
from klaviyo_dagster.warehouse import WarehouseResource


def _load_ingested_standin(sandbox, warehouse) -> None:
    """klaviyo.profiles_current / events / metrics with the ingest layer's column names, from truth."""
    profiles = pd.DataFrame([
        {"id": p["id"], **{k: p["attributes"].get(k) for k in (
            "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale",
            "title", "image")}, "location": orjson.dumps(p["attributes"].get("location")).decode()}
        for p in sandbox.truth.records("profile")])
    events = pd.DataFrame([
        {"id": e["id"], "datetime": e["attributes"]["datetime"],
         "profile_id": e["relationships"]["profile"]["data"]["id"],
         "metric_id": e["relationships"]["metric"]["data"]["id"]} for e in sandbox.truth.records("event")])
    metrics = pd.DataFrame([{"id": m["id"], "name": m["attributes"]["name"]} for m in sandbox.truth.records("metric")])
    with warehouse.transaction() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS klaviyo")
        for name, frame in (("profiles_current", profiles), ("events", events), ("metrics", metrics)):
            con.register("f", frame)
            extra = ", CAST(location AS JSON) AS location" if name == "profiles_current" else ""
            cols = "* EXCLUDE (location)" if name == "profiles_current" else "*"
            if name == "events":
                cols = "* REPLACE (CAST(datetime AS TIMESTAMPTZ) AS datetime)"
            con.execute(f"CREATE OR REPLACE TABLE klaviyo.{name} AS SELECT {cols}{extra} FROM f")
            con.unregister("f")


def test_models_then_activation_put_the_vip_tier_and_list_into_klaviyo(sandbox, warehouse, new_client):
    _load_ingested_standin(sandbox, warehouse)
    placed = next(m["id"] for m in sandbox.truth.records("metric") if m["attributes"]["name"] == "Placed Order")
    orders = Counter(e["relationships"]["profile"]["data"]["id"] for e in sandbox.truth.records("event")
                     if e["relationships"]["metric"]["data"]["id"] == placed)
    vips = {pid for pid, n in orders.items() if n >= 3}
    assert vips, "the seeded account should have repeat buyers"

    result = materialize(build_demo_model_assets(vip_min_orders=3),
                         resources={"warehouse": WarehouseResource(database=warehouse.database)})
    assert result.success
    audience = warehouse.query("SELECT list_name, profile_id FROM activation_inputs.vip_audience")
    assert {r[1] for r in audience} == vips and {r[0] for r in audience} == {DEFAULT_VIP_LIST}
    pid = sorted(vips)[0]
    row = warehouse.query("SELECT order_count, customer_tier, location_city FROM activation_inputs.profiles_enriched "
                          "WHERE klaviyo_profile_id = ?", [pid])[0]
    assert row[:2] == (orders[pid], "vip") and row[2]

    imported = run_profile_import(new_client(), warehouse, ProfileImportSettings(table="activation_inputs.profiles_enriched"))
    assert imported.imported + imported.rejected == imported.rows and imported.failed == 0
    client = new_client()
    served = client.get(f"/api/profiles/{pid}")["data"]["attributes"]  # what a re-ingest reads
    assert served["properties"]["customer_tier"] == "vip" and served["properties"]["order_count"] == orders[pid]

    synced = run_list_sync(new_client(), warehouse, ListSyncSettings(table="activation_inputs.vip_audience"))
    plan = synced.lists[0]
    assert plan.created and plan.adds == len(vips)
    assert {p for p, _ in sandbox.truth.members("list", plan.list_id)} == vips


def test_profiles_enriched_has_one_row_per_identity(tmp_path) -> None:
    """Two Klaviyo profiles of one person (same email, another case) become one row: the profile import would
    otherwise warn that a row repeats an identity."""
    from klaviyo_dagster.warehouse import Warehouse
    from klaviyo_dagster.warehouse.models import build_profiles_enriched

    wh = Warehouse(str(tmp_path / "wh.duckdb"))
    wh.execute("CREATE SCHEMA klaviyo")
    wh.execute(
        "CREATE TABLE klaviyo.profiles_current AS SELECT * FROM (VALUES "
        "('p1', 'Ann@Example.com', NULL, NULL, TIMESTAMPTZ '2026-01-01'), "
        "('p2', 'ann@example.com ', NULL, NULL, TIMESTAMPTZ '2026-02-01'), "
        "('p3', '', '+14155550100', NULL, TIMESTAMPTZ '2026-01-01'), "
        "('p4', NULL, '+14155550100', NULL, TIMESTAMPTZ '2026-01-02'), "
        "('p5', NULL, NULL, NULL, TIMESTAMPTZ '2026-01-01'), "
        "('p6', NULL, NULL, NULL, TIMESTAMPTZ '2026-01-01')"
        ") t(id, email, phone_number, external_id, updated)"
    )
    wh.execute("CREATE TABLE klaviyo.events (id VARCHAR, profile_id VARCHAR, metric_id VARCHAR, datetime TIMESTAMPTZ)")
    wh.execute("CREATE TABLE klaviyo.metrics (id VARCHAR, name VARCHAR)")
    facts = build_profiles_enriched(wh, "inputs.people", "klaviyo", 3)
    assert facts["rows"] == 4
    got = sorted(r[0] for r in wh.query("SELECT klaviyo_profile_id FROM inputs.people"))
    assert got == ["p2", "p4", "p5", "p6"]  # the latest updated of each person; no-identifier rows stay apart
