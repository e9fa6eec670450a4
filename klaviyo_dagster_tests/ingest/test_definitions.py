"""Shape of the ingest definitions: keys, partitions, pool, kinds, group, backfill policies, checks."""

from __future__ import annotations

import warnings

import dagster as dg
import pytest

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.ingest import OBJECTS


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_ingest_definitions(start_date="2026-02-01")


def test_every_object_is_an_asset_in_the_klaviyo_pool(defs: dg.Definitions) -> None:
    assets = {a.key.to_user_string(): a for a in defs.assets}
    sweeps = {f"klaviyo/{o.name}_deleted" for o in OBJECTS if o.sweep is not None}
    assert sorted(set(assets) - sweeps) == sorted(f"klaviyo/{o.name}" for o in OBJECTS)
    assert sweeps == {f"klaviyo/{n}_deleted" for n in ("profiles", "campaigns", "flows", "templates")}
    for key in sweeps:  # one weekly run over every id: not partitioned, same pool
        assert assets[key].partitions_def is None and assets[key].op.pool == "klaviyo_api"
    for obj in OBJECTS:
        a = assets[f"klaviyo/{obj.name}"]
        spec = a.specs_by_key[a.key]
        assert spec.group_name == "klaviyo_ingest"
        assert spec.kinds == {"klaviyo", "duckdb"}
        assert spec.description and obj.name.split("_")[0].rstrip("s") in spec.description.lower()
        if obj.incremental:
            assert a.partitions_def.start.date().isoformat() == "2026-02-01"
            assert a.partitions_def.get_partition_keys()[:2] == ["2026-02-01", "2026-02-02"]
            assert a.backfill_policy == dg.BackfillPolicy.single_run(), obj.name
        else:  # snapshots capture the current state: no past partition to offer
            assert a.partitions_def is None and a.backfill_policy is None, obj.name
        checks = {k.name for k in a.check_keys}
        assert {"primary_key_unique", "primary_key_not_null"} <= checks
        assert ("cursor_in_partition" in checks) == obj.incremental
        if obj.derived is not None:  # a view over its source's _current view: no API calls, no pool
            assert a.op.pool is None and "klaviyo" not in a.required_resource_keys, obj.name
            assert [d.asset_key for d in spec.deps] == [dg.AssetKey(["klaviyo", obj.derived.source])]
            continue
        assert a.op.pool == "klaviyo_api"
        assert a.required_resource_keys >= {"klaviyo", "warehouse"}


def test_object_selection_and_unknown_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=["events", "lists"], schedule=False)
    assert sorted(a.key.to_user_string() for a in defs.assets) == ["klaviyo/events", "klaviyo/lists"]
    assert not list(defs.schedules or [])
    with pytest.raises(ValueError, match="unknown Klaviyo object 'orders'"):
        build_ingest_definitions(objects=["orders"])
    with pytest.raises(ValueError, match="campaign_channels must be a non-empty selection of email, sms"):
        build_ingest_definitions(campaign_channels=["fax"])
    # A misspelt option names itself and the known ones (they are IngestOptions' fields, defined once).
    with pytest.raises(TypeError, match=r"unknown ingest option\(s\) event_metric; known: .*event_metrics"):
        build_ingest_definitions(event_metric=["Placed Order"])


def test_named_ingest_jobs_have_one_backfill_policy_each_and_schedules_target_them() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from klaviyo_dagster.definitions import build_definitions

        defs = build_definitions(start_date="2026-02-01")
        jobs = {name: defs.resolve_job_def(name) for name in (
            "klaviyo_ingest_incremental_job", "klaviyo_ingest_snapshots_job", "klaviyo_activation_job", "__ASSET_JOB",
        )}  # fmt: skip
    assert not [w for w in caught if "varying BackfillPolicies" in str(w.message)]
    incremental = {k.path[-1] for k in jobs["klaviyo_ingest_incremental_job"].asset_layer.executable_asset_keys}
    snapshots = {k.path[-1] for k in jobs["klaviyo_ingest_snapshots_job"].asset_layer.executable_asset_keys}
    assert incremental == {o.name for o in OBJECTS if o.incremental}
    assert snapshots == {o.name for o in OBJECTS if not o.incremental}
    assert jobs["klaviyo_ingest_incremental_job"].partitions_def is not None
    assert jobs["klaviyo_ingest_snapshots_job"].partitions_def is None
    policies = {defs.resolve_assets_def(k).backfill_policy
                for k in jobs["klaviyo_ingest_incremental_job"].asset_layer.executable_asset_keys}
    assert policies == {dg.BackfillPolicy.single_run()}
    targets = {s.name: s.job_name for s in defs.schedules}
    assert targets == {
        "klaviyo_ingest_daily": "klaviyo_ingest_incremental_job",
        "klaviyo_snapshots_daily": "klaviyo_ingest_snapshots_job",
        "klaviyo_activation_schedule": "klaviyo_activation_job",
        "klaviyo_deletion_sweep_weekly": "klaviyo_deletion_sweep",
    }
    # Small runs execute in the run's own process (no per-step process start-up).
    assert {j.executor_def.name for j in jobs.values()} == {"in_process"}
