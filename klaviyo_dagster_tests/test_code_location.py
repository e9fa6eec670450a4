"""The code location `workspace.yaml` loads: every asset, job, schedule and sensor, and their resources."""

from __future__ import annotations

import dagster as dg
import pytest

from klaviyo_dagster.definitions import build_definitions
from klaviyo_dagster.ingest import OBJECTS
from klaviyo_dagster.resources import KLAVIYO_POOL


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(start_date="2026-01-01")


def test_every_object_and_both_activation_assets_are_defined(defs: dg.Definitions) -> None:
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {f"klaviyo/{o.name}" for o in OBJECTS} <= keys
    assert {"klaviyo/profile_import", "klaviyo/list_membership_sync"} <= keys
    assert {s.name for s in defs.schedules} == {
        "klaviyo_ingest_daily", "klaviyo_snapshots_daily", "klaviyo_activation_schedule", "klaviyo_deletion_sweep_weekly"}
    swept = {f"klaviyo/{o.name}_deleted" for o in OBJECTS if o.sweep is not None}
    assert "klaviyo/profiles_deleted" in swept and swept <= keys
    assert {s.name for s in defs.sensors} == {"klaviyo_activation_inputs_sensor"}
    assert set(defs.resources) == {"klaviyo", "warehouse"}


def test_every_asset_that_calls_klaviyo_shares_one_concurrency_pool(defs: dg.Definitions) -> None:
    calling = [a for a in defs.assets if "klaviyo" in getattr(a, "required_resource_keys", set())]
    sweeps = [o for o in OBJECTS if o.sweep is not None]
    derived = [o for o in OBJECTS if o.derived is not None]  # views in the warehouse: no API calls
    assert len(calling) == len(OBJECTS) - len(derived) + len(sweeps) + 2
    assert {a.node_def.pool for a in calling} == {KLAVIYO_POOL}


def test_partitions_start_at_the_configured_date_and_include_today(defs: dg.Definitions) -> None:
    events = defs.resolve_assets_def(dg.AssetKey(["klaviyo", "events"]))
    keys = events.partitions_def.get_partition_keys()
    today = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1).get_last_partition_key()
    assert keys[0] == "2026-01-01" and keys[-1] == today
