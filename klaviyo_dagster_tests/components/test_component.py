"""KlaviyoComponent from YAML, without the CLI: secrets as EnvVars, translation, automation, two accounts."""

from __future__ import annotations

import warnings

import dagster as dg
import pytest
import yaml

from klaviyo_dagster import KlaviyoComponent
from klaviyo_dagster.components.scaffolder import default_attributes
from klaviyo_dagster.ingest.objects import OBJECTS


def _defs(attributes: dict) -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        component = KlaviyoComponent.resolve_from_yaml(yaml.safe_dump(attributes))
        return dg.component_defs(component=component)


def _specs(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    out = {}
    for a in defs.assets or []:
        specs = [a] if isinstance(a, dg.AssetSpec) else a.specs
        out.update({s.key.to_user_string(): s for s in specs})
    return out


def test_env_templates_become_env_vars_so_the_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_secret_value_123")
    monkeypatch.setenv("KLAVIYO_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("KLAVIYO_DUCKDB_PATH", raising=False)
    defs = _defs(default_attributes())
    klaviyo = defs.resources["klaviyo"]
    # The resource holds the variables' names; Dagster shows {"env": NAME} and reads the value at run time.
    assert isinstance(klaviyo.api_key, dg.EnvVar) and klaviyo.api_key.env_var_name == "KLAVIYO_API_KEY"
    assert isinstance(klaviyo.base_url, dg.EnvVar) and klaviyo.base_url.env_var_name == "KLAVIYO_BASE_URL"
    assert "pk_secret_value_123" not in repr(defs.resources) + repr(_specs(defs))
    # Unset with a default: the default; the database path was unset here.
    assert defs.resources["warehouse"].database == "data/warehouse.duckdb"
    monkeypatch.delenv("KLAVIYO_BASE_URL")
    assert _defs(default_attributes()).resources["klaviyo"].base_url == "https://a.klaviyo.com"

# Every object of the table, and the deletion sweep of each object that has one.
INGEST_KEYS = {f"klaviyo/{o.name}" for o in OBJECTS} | {f"klaviyo/{o.name}_deleted" for o in OBJECTS if o.sweep}


def test_scaffolded_attributes_build_every_object_and_no_activation_by_default() -> None:
    specs = _specs(_defs(default_attributes()))
    assert set(specs) == INGEST_KEYS
    assert {s.tags["klaviyo/role"] for s in specs.values()} == {"ingest"}  # the scaffolded translation


def test_yaml_translation_automation_and_activation() -> None:
    attrs = default_attributes()
    attrs["ingest"]["objects"] = ["profiles", "events"]
    attrs["ingest"]["automation_condition"] = "{{ dg.AutomationCondition.on_cron('15 2 * * *') }}"
    attrs["activation"].update({"enabled": True, "include_demo_models": True,
                                "automation_condition": "{{ dg.AutomationCondition.eager() }}"})
    attrs["translation"] = {
        "owners": ["team:crm"],
        "group_name": "{{ 'crm_' + props.role }}",
        "metadata": {"klaviyo/object": "{{ props.name }}"},
    }
    defs = _defs(attrs)
    specs = _specs(defs)
    assert set(specs) == {"klaviyo/profiles", "klaviyo/profiles_deleted", "klaviyo/events",
                          "activation_inputs/profiles_enriched",
                          "activation_inputs/vip_audience", "klaviyo/profile_import", "klaviyo/list_membership_sync"}
    assert specs["klaviyo/events"].group_name == "crm_ingest"
    assert specs["klaviyo/profile_import"].group_name == "crm_activation"
    assert specs["activation_inputs/vip_audience"].group_name == "crm_model"
    assert all(s.owners == ["team:crm"] for s in specs.values())
    # translation merges metadata: the standard entries stay.
    events = specs["klaviyo/events"]
    assert events.metadata["klaviyo/object"] == "events" and "dagster/column_schema" in events.metadata
    assert events.automation_condition == dg.AutomationCondition.on_cron("15 2 * * *")
    assert specs["klaviyo/profile_import"].automation_condition == dg.AutomationCondition.eager()
    assert specs["activation_inputs/profiles_enriched"].automation_condition is None
    assert {j.name for j in defs.jobs} >= {"klaviyo_activation_job"}


def test_a_subclass_overrides_get_asset_spec_and_translation_still_applies() -> None:
    class Bronze(KlaviyoComponent):
        def get_asset_spec(self, props):
            return super().get_asset_spec(props).replace_attributes(key=dg.AssetKey(["bronze", props.name]))

    attrs = default_attributes()
    attrs["ingest"]["objects"] = ["lists"]
    attrs["translation"] = {"key_prefix": "raw"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = dg.component_defs(component=Bronze.resolve_from_yaml(yaml.safe_dump(attrs)))
    assert set(_specs(defs)) == {"raw/bronze/lists"}


def test_two_accounts_are_two_yaml_blocks_with_their_own_keys() -> None:
    us = default_attributes()
    eu = default_attributes()
    eu.update({"key_prefix": ["klaviyo_eu"], "resource_key": "klaviyo_eu", "warehouse_resource_key": "warehouse_eu"})
    eu["klaviyo"]["api_key"] = "{{ env.KLAVIYO_EU_API_KEY }}"
    eu["warehouse"]["schema"] = "klaviyo_eu"
    merged = dg.Definitions.merge(_defs(us), _defs(eu))
    merged.resolve_implicit_global_asset_job_def()
    specs = _specs(merged)
    assert set(specs) == INGEST_KEYS | {k.replace("klaviyo/", "klaviyo_eu/", 1) for k in INGEST_KEYS}
    assert specs["klaviyo_eu/profiles"].metadata["dagster/table_name"] == "warehouse.klaviyo_eu.profiles"
    assert set(merged.resources) == {"klaviyo", "warehouse", "klaviyo_eu", "warehouse_eu"}
    assert merged.resources["warehouse_eu"].schema_ == "klaviyo_eu"
    assert {s.name for s in merged.schedules} == {"klaviyo_ingest_daily", "klaviyo_eu_ingest_daily",
                                                  "klaviyo_snapshots_daily", "klaviyo_eu_snapshots_daily",
                                                  "klaviyo_deletion_sweep_weekly",
                                                  "klaviyo_eu_deletion_sweep_weekly"}
