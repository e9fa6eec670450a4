"""klaviyo/privacy_deletions against the sandbox over HTTP: the switch and size guard, dry runs, deletions
confirmed gone (API and re-ingest), one hashed ledger row per identifier, re-runs that send nothing."""

from datetime import datetime

import pytest
from dagster import materialize

from klaviyo_dagster.activate.list_sync import ActivationRefused
from klaviyo_dagster.activate.privacy import (
    LEDGER,
    PrivacySettings,
    build_privacy_deletions_asset,
    identity_hash,
    run_privacy_deletions,
)
from klaviyo_dagster.client import KlaviyoNotFoundError
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource
from klaviyo_dagster_tests.activate.conftest import write_calls
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import failure_text
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import materialize as ingest


def _day(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(hour=0, minute=0, second=0, microsecond=0)


def test_deletions_behind_the_switch_confirmed_gone_and_recorded_once(sandbox, tmp_path, new_client):
    wh = Warehouse(str(tmp_path / "wh.duckdb"))
    wh.execute("CREATE SCHEMA inputs")
    people = [p for p in sandbox.truth.records("profile") if p["attributes"].get("email")][100:103]
    by_email, by_id, by_both = people
    wh.execute("CREATE TABLE inputs.forget (email VARCHAR, klaviyo_profile_id VARCHAR, ticket VARCHAR)")
    rows = [(by_email["attributes"]["email"].upper(), None, "T-1"), (None, by_id["id"], "T-2"),
            (by_both["attributes"]["email"], by_both["id"], "T-3"), ("never.existed@example.com", None, "T-4"),
            ("not an email", None, "T-5")]
    for row in rows:
        wh.execute("INSERT INTO inputs.forget VALUES (?, ?, ?)", list(row))
    ids = {p["id"] for p in people}
    owners = [e["relationships"]["profile"]["data"]["id"] for e in sandbox.truth.records("event")]
    assert ids <= set(owners)  # they have events, which the deletion removes too
    db = tmp_path / "ingest.duckdb"
    day = _day(by_email["attributes"]["updated"])
    assert ingest(sandbox, db, "profiles", partition=day).success
    ingested = Warehouse(str(db))
    assert ingested.query(f"SELECT count(*) FROM {ingested.qualified('profiles')} WHERE id = ?", [by_email["id"]]) == [(1,)]

    client = new_client()
    settings = PrivacySettings(table="inputs.forget", max_wait_s=20)
    with pytest.raises(ActivationRefused, match="allow_deletions=True"):
        run_privacy_deletions(client, wh, settings)
    assert write_calls(client) == 0
    plan = run_privacy_deletions(new_client(), wh, PrivacySettings(table="inputs.forget", dry_run=True))
    assert (plan.identifiers, plan.planned, plan.requested) == (6, 6, 0)
    assert wh.query(f"SELECT count(*) FROM {LEDGER}") == [(0,)]
    assert client.get(f"/api/profiles/{by_id['id']}")["data"]["id"] == by_id["id"]

    settings = settings.model_copy(update={"allow_deletions": True, "changed_by": "dpo@example.com"})
    client = new_client()
    done = run_privacy_deletions(client, wh, settings, run_id="r1")
    assert (done.requested, done.confirmed, done.pending, done.rejected) == (5, 5, 0, 1)
    assert write_calls(client) == 5  # one request per identifier, the bad one never sent
    for p in people:
        with pytest.raises(KlaviyoNotFoundError):
            client.get(f"/api/profiles/{p['id']}")
    left = [e["relationships"]["profile"]["data"]["id"] for e in sandbox.truth.records("event")]
    assert not ids & set(left) and len(left) == len(owners) - sum(o in ids for o in owners)
    ledger = {r[0]: r[1:] for r in wh.query(
        f"SELECT identity_hash, kind, outcome, changed_by, requested_at IS NOT NULL, confirmed_at IS NOT NULL "
        f"FROM {LEDGER}")}
    assert len(ledger) == 6
    assert ledger[identity_hash("email", by_email["attributes"]["email"].lower())] == (
        "email", "confirmed", "dpo@example.com", True, True)
    assert ledger[identity_hash("id", by_id["id"])][1] == "confirmed"
    assert ledger[identity_hash("email", "not an email")][1] == "rejected"
    text = str(wh.query(f"SELECT * FROM {LEDGER}"))
    assert by_email["attributes"]["email"].lower() not in text and "never.existed" not in text  # no personal data

    client = new_client()
    again = run_privacy_deletions(client, wh, settings, run_id="r2")
    assert (again.done_before, again.planned, again.requested) == (6, 0, 0) and write_calls(client) == 0

    # Re-ingesting the partition the deleted profile lived in drops it from the warehouse.
    result = ingest(sandbox, db, "profiles", partition=day)
    assert result.success, failure_text(result)
    assert ingested.query(f"SELECT count(*) FROM {ingested.qualified('profiles')} WHERE id = ?", [by_email["id"]]) == [(0,)]


def test_size_guard_and_asset_switch(sandbox, tmp_path):
    db = tmp_path / "wh.duckdb"
    wh = Warehouse(str(db))
    wh.execute("CREATE SCHEMA inputs")
    wh.execute("CREATE TABLE inputs.forget AS SELECT 'gone' || i || '@example.com' AS email FROM range(3) t(i)")
    asset = build_privacy_deletions_asset("inputs.forget")
    resources = {"klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url, rate_limit_scale=0),
                 "warehouse": WarehouseResource(database=str(db))}
    op = "klaviyo__privacy_deletions"
    refused = materialize([asset], resources=resources, raise_on_error=False)
    assert not refused.success and "allow_deletions" in failure_text(refused)
    too_many = materialize([asset], resources=resources, raise_on_error=False, run_config={"ops": {op: {"config": {
        "allow_deletions": True, "max_deletions_per_run": 2}}}})
    assert not too_many.success and "max_deletions_per_run=2" in failure_text(too_many)
    assert wh.query(f"SELECT count(*) FROM {LEDGER}") == [(0,)]
    ok = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {
        "allow_deletions": True, "changed_by": "privacy-team"}}}})
    meta = ok.asset_materializations_for_node(op)[0].metadata
    assert (meta["requested"].value, meta["confirmed"].value, meta["changed_by"].value) == (3, 3, "privacy-team")
