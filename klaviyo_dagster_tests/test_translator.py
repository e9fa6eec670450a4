"""DagsterKlaviyoTranslator: every asset's spec comes from it; two accounts live side by side in one location."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster import DagsterKlaviyoTranslator, KlaviyoAssetProps
from klaviyo_dagster.factories import build_activation_definitions, build_ingest_definitions
from klaviyo_dagster.ingest import OBJECTS
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

UTC = timezone.utc


def _specs(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    out = {}
    for a in defs.assets or []:
        if isinstance(a, dg.AssetSpec):
            out[a.key.to_user_string()] = a
        else:
            out.update({k.to_user_string(): s for k, s in a.specs_by_key.items()})
    return out


def test_default_specs_carry_standard_metadata_groups_and_kinds() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = _specs(dg.Definitions.merge(
            build_ingest_definitions(start_date="2026-01-01"),
            build_activation_definitions(include_demo_models=True),
        ))
    for obj in OBJECTS:
        spec = specs[f"klaviyo/{obj.name}"]
        assert spec.group_name == "klaviyo_ingest" and spec.kinds == {"klaviyo", "duckdb"}
        assert spec.metadata["dagster/table_name"] == f"warehouse.klaviyo.{obj.name}"
        schema = spec.metadata["dagster/column_schema"]
        names = [c.name for c in schema.columns]
        assert names == [*(c.name for c in obj.columns), "_partition", "_loaded_at"]
        if obj.derived is not None:  # a view: its own key, whose nullable parts make it a unique key
            assert schema.constraints.other == [f"UNIQUE ({', '.join(obj.primary_key)})"]
            assert {c.name for c in schema.columns if not c.constraints.nullable} == (
                set(obj.primary_key) - set(obj.derived.nullable_key))
            continue
        assert schema.constraints.other == [f"PRIMARY KEY ({', '.join((*obj.primary_key, '_partition'))})"]
        assert {c.name for c in schema.columns if not c.constraints.nullable} == {*obj.primary_key, "_partition"}
    assert specs["klaviyo/profile_import"].group_name == "klaviyo_activation"
    assert specs["klaviyo/profile_import"].kinds == {"klaviyo"}
    assert {d.asset_key for d in specs["klaviyo/profile_import"].deps} == {
        dg.AssetKey(["activation_inputs", "profiles_enriched"])}
    enriched = specs["activation_inputs/profiles_enriched"]
    assert enriched.group_name == "klaviyo_models" and enriched.kinds == {"duckdb", "sql"}
    assert {d.asset_key.to_user_string() for d in enriched.deps} == {
        "klaviyo/profiles", "klaviyo/events", "klaviyo/metrics"}


def test_translator_options_reach_every_asset() -> None:
    on_cron = dg.AutomationCondition.on_cron("0 3 * * *")
    eager = dg.AutomationCondition.eager()
    fresh = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26))
    translator = DagsterKlaviyoTranslator(
        key_prefix=["crm", "klaviyo"],
        group_names={"ingest": "raw_klaviyo", "activation": "reverse_etl"},
        owners=["team:data"],
        tags={"source": "klaviyo"},
        automation_conditions={"ingest": on_cron, "profile_import": eager},
        freshness_policies={"events": fresh},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = _specs(dg.Definitions.merge(
            build_ingest_definitions(translator=translator, objects=["profiles", "events"]),
            build_activation_definitions("inputs.people", "inputs.audience", translator=translator),
        ))
    assert set(specs) == {"crm/klaviyo/profiles", "crm/klaviyo/events", "crm/klaviyo/profile_import",
                          "crm/klaviyo/list_membership_sync", "inputs/people", "inputs/audience",
                          "crm/klaviyo/profiles_deleted"}  # the deletion sweep sits beside its object
    for key in ("crm/klaviyo/profiles", "crm/klaviyo/events"):
        assert specs[key].group_name == "raw_klaviyo" and specs[key].automation_condition == on_cron
        assert specs[key].owners == ["team:data"] and specs[key].tags["source"] == "klaviyo"
    assert specs["crm/klaviyo/events"].freshness_policy == fresh
    assert specs["crm/klaviyo/profiles"].freshness_policy is None
    assert specs["crm/klaviyo/profile_import"].automation_condition == eager
    assert specs["crm/klaviyo/profile_import"].group_name == "reverse_etl"
    assert specs["crm/klaviyo/list_membership_sync"].automation_condition is None
    assert specs["inputs/people"].group_name == "klaviyo_models"  # not overridden: the default


def test_a_subclass_overrides_get_asset_spec() -> None:
    class Mine(DagsterKlaviyoTranslator):
        def get_asset_spec(self, props: KlaviyoAssetProps) -> dg.AssetSpec:
            spec = super().get_asset_spec(props)
            return spec.replace_attributes(key=dg.AssetKey(["bronze", f"klaviyo_{props.name}"]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(translator=Mine(), objects=["lists", "events"])
    assert sorted(_specs(defs)) == ["bronze/klaviyo_events", "bronze/klaviyo_lists"]
    # The schedule follows the translated keys (events keeps its lookback run).
    schedule = next(iter(defs.schedules))
    assert "bronze/klaviyo_events re-read" in schedule.description


@pytest.fixture(scope="module")
def two_sandboxes():
    with run_sandbox(seed=42, scale="small") as us, run_sandbox(seed=7, scale="small") as eu:
        yield us, eu


def test_two_accounts_in_one_code_location(two_sandboxes, tmp_path: Path) -> None:
    us, eu = two_sandboxes
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    start = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    db = str(tmp_path / "warehouse.duckdb")
    resources = {
        "klaviyo": KlaviyoResource(api_key=us.api_key, base_url=us.base_url, rate_limit_scale=0),
        "klaviyo_eu": KlaviyoResource(api_key=eu.api_key, base_url=eu.base_url, rate_limit_scale=0),
        "warehouse": WarehouseResource(database=db),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = dg.Definitions.merge(
            build_ingest_definitions(start_date=start, objects=["profiles", "lists"], resources=resources),
            build_ingest_definitions(
                start_date=start, objects=["profiles", "lists"],
                translator=DagsterKlaviyoTranslator(key_prefix=["klaviyo_eu"]),
                klaviyo_resource_key="klaviyo_eu", schema="klaviyo_eu",
            ),
            build_activation_definitions("inputs.people", "inputs.audience"),
            build_activation_definitions(
                "inputs_eu.people", "inputs_eu.audience", source_schema="klaviyo_eu",
                translator=DagsterKlaviyoTranslator(key_prefix=["klaviyo_eu"]), klaviyo_resource_key="klaviyo_eu",
            ),
        )
    defs.resolve_implicit_global_asset_job_def()  # the location loads: no key, job or name collides
    assert {s.name for s in defs.schedules} == {
        "klaviyo_ingest_daily", "klaviyo_eu_ingest_daily", "klaviyo_snapshots_daily", "klaviyo_eu_snapshots_daily",
        "klaviyo_activation_schedule", "klaviyo_eu_activation_schedule",
        "klaviyo_deletion_sweep_weekly", "klaviyo_eu_deletion_sweep_weekly"}
    assert {s.name for s in defs.sensors} == {"klaviyo_activation_inputs_sensor", "klaviyo_eu_activation_inputs_sensor"}
    eu_profiles = defs.resolve_assets_def(dg.AssetKey(["klaviyo_eu", "profiles"]))
    assert eu_profiles.required_resource_keys >= {"klaviyo_eu", "warehouse"}
    assert eu_profiles.op.pool == "klaviyo_eu_api"  # Klaviyo's limits are per account
    spec = eu_profiles.specs_by_key[eu_profiles.key]
    assert spec.metadata["dagster/table_name"] == "warehouse.klaviyo_eu.profiles"

    keys = [dg.AssetKey([p, n]) for p in ("klaviyo", "klaviyo_eu") for n in ("profiles", "lists")]
    result = dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key in keys],
        resources=resources, partition_key=day, instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    for schema, handle in (("klaviyo", us), ("klaviyo_eu", eu)):
        wh = Warehouse(db, schema)
        got = {r[0] for r in wh.query(f"SELECT id FROM {wh.qualified('lists')}")}
        assert got == {r["id"] for r in handle.truth.records("list")}
        mat = result.asset_materializations_for_node(f"{schema}__profiles")[0]
        assert mat.metadata["dagster/table_name"].value == f"warehouse.{schema}.profiles"
    us_lists = {r["id"] for r in us.truth.records("list")}
    assert us_lists and us_lists != {r["id"] for r in eu.truth.records("list")}
