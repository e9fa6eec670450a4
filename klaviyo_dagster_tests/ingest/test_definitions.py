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


def test_every_object_is_a_partitioned_asset_in_the_klaviyo_pool(defs: dg.Definitions) -> None:
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
        assert a.partitions_def.start.date().isoformat() == "2026-02-01"
        assert a.partitions_def.get_partition_keys()[:2] == ["2026-02-01", "2026-02-02"]
        assert a.op.pool == "klaviyo_api"
        expected = dg.BackfillPolicy.single_run() if obj.incremental else dg.BackfillPolicy.multi_run(1)
        assert a.backfill_policy == expected, obj.name
        checks = {k.name for k in a.check_keys}
        assert {"primary_key_unique", "primary_key_not_null"} <= checks
        assert ("cursor_in_partition" in checks) == obj.incremental
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
