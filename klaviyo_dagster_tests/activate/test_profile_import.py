"""klaviyo/profile_import against the sandbox over HTTP: only changes are sent, outcomes are real."""

import re

import pytest
from dagster import materialize

from klaviyo_dagster.activate import ProfileImportSettings, run_profile_import
from klaviyo_dagster.activate.profile_import import build_profile_import_asset
from klaviyo_dagster.activate.state import IMPORT_JOBS, LOG, STATE
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource
from klaviyo_dagster_tests.activate.conftest import write_calls


def _profiles_at(sandbox, domain: str) -> dict[str, dict]:
    """Sandbox profiles whose email is at ``domain``, by email."""
    out = {}
    for p in sandbox.truth.records("profile"):
        email = p["attributes"].get("email") or ""
        if email.endswith("@" + domain):
            out[email] = p["attributes"]
    return out


def _log(warehouse, sync_name: str, run_id: str) -> dict[str, tuple[str, str | None]]:
    rows = warehouse.query(
        f"SELECT identity, outcome, reason FROM {LOG} WHERE sync_name = ? AND run_id = ?", [sync_name, run_id])
    return {r[0]: (r[1], r[2]) for r in rows}


def test_only_new_and_changed_rows_are_sent_and_invalid_rows_are_rejected(sandbox, warehouse, new_client, caplog):
    domain = "pi-one.example.com"
    warehouse.execute(
        "CREATE TABLE inputs.people_one AS SELECT 'user' || i || '@" + domain + "' AS email, "
        "'cust_one_' || i AS external_id, 'First' || i AS first_name, i AS order_count, "
        "'Boston' AS location_city FROM range(5) t(i)"
    )
    warehouse.execute(
        "INSERT INTO inputs.people_one VALUES ('broken@', NULL, 'Bad', 1, NULL), "
        "(NULL, NULL, 'Nobody', 2, NULL), ('phone@" + domain + "', NULL, 'Phone', 3, NULL)"
    )
    warehouse.execute("ALTER TABLE inputs.people_one ADD COLUMN phone_number VARCHAR")
    warehouse.execute("UPDATE inputs.people_one SET phone_number = '415-555-0100' WHERE first_name = 'Phone'")
    settings = ProfileImportSettings(table="inputs.people_one", sync_name="one")

    client = new_client()
    caplog.set_level("INFO", logger="klaviyo_dagster.activate.profile_import")
    first = run_profile_import(client, warehouse, settings, run_id="r1")
    summary = caplog.records[-1].getMessage()
    assert summary.startswith("read 8 rows from inputs.people_one; 0 unchanged since the last sync")
    assert summary.endswith("sent 5 profiles in 1 jobs: 5 imported, 0 failed, 0 pending, 3 rejected before sending")
    assert (first.rows, first.sent, first.imported, first.rejected, first.failed) == (8, 5, 5, 3, 0)
    assert write_calls(client) == 1 and len(first.job_ids) == 1
    landed = _profiles_at(sandbox, domain)
    assert sorted(landed) == [f"user{i}@{domain}" for i in range(5)]
    assert landed[f"user3@{domain}"]["first_name"] == "First3"
    assert landed[f"user3@{domain}"]["external_id"] == "cust_one_3"
    assert landed[f"user3@{domain}"]["properties"]["order_count"] == 3
    assert landed[f"user3@{domain}"]["location"]["city"] == "Boston"
    log = _log(warehouse, "one", "r1")
    assert log["external_id:cust_one_3"] == ("imported", None)
    assert log["email:broken@"][0] == "rejected" and "invalid email 'broken@'" in log["email:broken@"][1]
    assert log[f"email:phone@{domain}"][0] == "rejected" and "not E.164" in log[f"email:phone@{domain}"][1]
    nobody = [v for k, v in log.items() if k.startswith("row:")]
    assert nobody == [("rejected", nobody[0][1])] and "no identifier" in nobody[0][1]

    client = new_client()
    again = run_profile_import(client, warehouse, settings, run_id="r2")
    assert (again.sent, again.unchanged, again.rejected) == (0, 8, 0)
    # A run that sends nothing says why: every row is unchanged since the last sync state.
    summary = caplog.records[-1].getMessage()
    assert summary == (f"read 8 rows from inputs.people_one; 8 unchanged since the last sync (same content hash "
                       f"as last imported, {STATE}; full_resync=True sends them anyway); nothing to send")
    assert client.stats.requests == 0  # not even a read: the diff happens in the warehouse

    warehouse.execute("UPDATE inputs.people_one SET first_name = 'Renamed' WHERE external_id = 'cust_one_2'")
    client = new_client()
    changed = run_profile_import(client, warehouse, settings, run_id="r3")
    assert (changed.sent, changed.imported, changed.unchanged, changed.job_profiles) == (1, 1, 7, [1])
    assert write_calls(client) == 1
    assert _log(warehouse, "one", "r3") == {"external_id:cust_one_2": ("imported", None)}
    landed = _profiles_at(sandbox, domain)
    assert landed[f"user2@{domain}"]["first_name"] == "Renamed"
    assert landed[f"user1@{domain}"]["first_name"] == "First1"


@pytest.fixture()
def job_errors(sandbox):
    """Invalid rows answered as import errors of an accepted job (semantics import_invalid_row=job_error)."""
    with sandbox.semantics_override(import_invalid_row="job_error"):
        yield


def test_rows_a_job_fails_are_logged_and_sent_again_next_run(sandbox, warehouse, new_client, job_errors):
    domain = "pi-two.example.com"
    warehouse.execute(
        "CREATE TABLE inputs.people_two AS SELECT * FROM (VALUES "
        f"('a@{domain}', 'x2_a'), ('b@{domain}', 'x2_b'), ('not-an-email', 'x2_c')) t(email, external_id)"
    )
    # Without pre-validation the bad row reaches Klaviyo, whose job reports it as an import error.
    settings = ProfileImportSettings(table="inputs.people_two", sync_name="two", prevalidate=False)
    first = run_profile_import(new_client(), warehouse, settings, run_id="f1")
    assert (first.sent, first.imported, first.failed, first.rejected) == (3, 2, 1, 0)
    outcome, reason = _log(warehouse, "two", "f1")["external_id:x2_c"]
    assert outcome == "failed" and "not-an-email" in reason and "/data/attributes/profiles/data/2" in reason
    assert {r[0] for r in warehouse.query(f"SELECT identity FROM {STATE} WHERE sync_name = 'two'")} == {
        "external_id:x2_a", "external_id:x2_b"}

    client = new_client()
    retry = run_profile_import(client, warehouse, settings, run_id="f2")
    assert (retry.sent, retry.failed, retry.unchanged) == (1, 1, 2)
    assert write_calls(client) == 1

    warehouse.execute(f"UPDATE inputs.people_two SET email = 'c@{domain}' WHERE external_id = 'x2_c'")
    fixed = run_profile_import(new_client(), warehouse, settings, run_id="f3")
    assert (fixed.sent, fixed.imported, fixed.failed) == (1, 1, 0)
    assert f"c@{domain}" in _profiles_at(sandbox, domain)
    assert run_profile_import(new_client(), warehouse, settings).sent == 0


def test_asset_reports_metadata_splits_jobs_and_dry_run_sends_nothing(sandbox, warehouse, new_client):
    domain = "pi-three.example.com"
    warehouse.execute(
        f"CREATE TABLE inputs.people_three AS SELECT 'u' || i || '@{domain}' AS email FROM range(5) t(i)"
    )
    asset = build_profile_import_asset("inputs.people_three")
    resources = {
        "klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url),
        "warehouse": WarehouseResource(database=warehouse.database),
    }
    op = "klaviyo__profile_import"

    dry = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {"dry_run": True}}}})
    meta = dry.asset_materializations_for_node(op)[0].metadata
    assert meta["dry_run"].value is True and meta["sent"].value == 5 and meta["job_ids"].value == []
    assert _profiles_at(sandbox, domain) == {}
    assert warehouse.query(f"SELECT count(*) FROM {STATE} WHERE sync_name = 'profile_import'")[0][0] == 0

    real = materialize([asset], resources=resources,
                       run_config={"ops": {op: {"config": {"max_job_profiles": 2}}}})
    meta = real.asset_materializations_for_node(op)[0].metadata
    assert {k: meta[k].value for k in ("sent", "imported", "unchanged", "rejected", "failed")} == {
        "sent": 5, "imported": 5, "unchanged": 0, "rejected": 0, "failed": 0}
    assert meta["job_profiles"].value == [2, 2, 1] and len(meta["job_ids"].value) == 3
    assert all(b < 5_000_000 for b in meta["job_bytes"].value) and meta["duration_s"].value >= 0
    assert len(_profiles_at(sandbox, domain)) == 5
    assert sandbox.api_key not in str(meta)


def test_a_job_still_running_at_max_wait_is_logged_pending_fails_the_asset_and_is_polled_not_resent(
    sandbox, warehouse, new_client
):
    domain = "pi-slow.example.com"
    warehouse.execute(
        f"CREATE TABLE inputs.people_slow AS SELECT 'u' || i || '@{domain}' AS email FROM range(3) t(i)"
    )
    asset = build_profile_import_asset("inputs.people_slow", sync_name="slow")
    resources = {
        "klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url),
        "warehouse": WarehouseResource(database=warehouse.database),
    }
    op = "klaviyo__profile_import"
    with sandbox.semantics_override(import_job_seconds=3):  # Klaviyo is slow today: the job outlives max_wait_s
        slow = materialize([asset], resources=resources, raise_on_error=False,
                           run_config={"ops": {op: {"config": {"max_wait_s": 0.5}}}})
    assert not slow.success
    failure = next(e for e in slow.all_events if e.is_failure).event_specific_data.error.to_string()
    assert re.search(r"3 profiles have no confirmed outcome yet: in Klaviyo jobs that did not finish within \d+ s",
                     failure), failure
    assert "raise max_wait_s" in failure.lower()
    pending = warehouse.query(f"SELECT outcome, count(*) FROM {LOG} WHERE sync_name = 'slow' GROUP BY 1")
    assert pending == [("pending", 3)]
    assert warehouse.query(f"SELECT count(*) FROM {STATE} WHERE sync_name = 'slow'") == [(0,)]
    (job_id,) = warehouse.query(f"SELECT job_id FROM {IMPORT_JOBS} WHERE sync_name = 'slow' AND status = 'open'")[0]

    # The next run polls the open job first and records its outcome; nothing goes in a second job.
    client = new_client()
    retry = run_profile_import(client, warehouse, ProfileImportSettings(table="inputs.people_slow",
                                                                        sync_name="slow"))
    assert (retry.resumed_jobs, retry.sent, retry.imported, retry.pending, retry.job_ids) == (1, 0, 3, 0, [])
    assert write_calls(client) == 0
    assert warehouse.query(f"SELECT job_id, status FROM {IMPORT_JOBS} WHERE sync_name = 'slow'") == [
        (job_id, "complete")]
    assert len(_profiles_at(sandbox, domain)) == 3
