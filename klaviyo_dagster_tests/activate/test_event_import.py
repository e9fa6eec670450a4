"""klaviyo/event_import against the sandbox over HTTP: events land once, are confirmed, re-runs send nothing,
and ingest reads them back into klaviyo.events."""

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from dagster import materialize

from klaviyo_dagster.activate.event_import import (
    LOG,
    STATE,
    EventImportSettings,
    build_event_import_asset,
    run_event_import,
)
from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox.semantics import plausible_values
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource
from klaviyo_dagster_tests.activate.conftest import write_calls
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import failure_text
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import materialize as ingest


def _events(sandbox, metric: str) -> list[dict]:
    """The sandbox's events of ``metric`` (raw HTTP with a metric filter: the truth walk over every event is slow)."""
    ids = [m["id"] for m in sandbox.truth.records("metric") if m["attributes"]["name"] == metric]
    if not ids:
        return []
    with KlaviyoClient(sandbox.api_key, base_url=sandbox.base_url, rate_limit_scale=0) as client:
        return [e for page in client.paginate("/api/events", {"filter": f'equals(metric_id,"{ids[0]}")'})
                for e in page["data"]]


def _log(warehouse, run_id: str) -> dict[str, tuple[str, str | None]]:
    rows = warehouse.query(f"SELECT event_key, outcome, reason FROM {LOG} WHERE run_id = ?", [run_id])
    return {r[0]: (r[1], r[2]) for r in rows}


def _table(warehouse, name: str, day: datetime, known: list[dict]) -> None:
    at = day.replace(hour=12, minute=0, second=0, microsecond=0, tzinfo=None)
    rows = [(p["attributes"]["email"], f"trial-{k}", at + timedelta(minutes=k), 10.0 * k, orjson.dumps({"plan": "pro", "k": k}).decode())
            for k, p in enumerate(known)]
    rows += [("brand.new@example.com", "trial-new", at, None, "{}"),
             ("not-an-email", "trial-bad", at, None, "{}"),
             ("no.time@example.com", "trial-notime", None, None, "{}")]
    warehouse.execute(f"CREATE OR REPLACE TABLE inputs.{name} (email VARCHAR, unique_id VARCHAR, time TIMESTAMP, "
                      "value DOUBLE, properties JSON, metric VARCHAR DEFAULT 'Trial Ending', channel VARCHAR DEFAULT 'web')")
    for row in rows:
        warehouse.execute(f"INSERT INTO inputs.{name} (email, unique_id, time, value, properties) VALUES (?, ?, ?, ?, ?)",
                          list(row))


def test_events_land_once_are_confirmed_and_reruns_send_nothing(sandbox, tmp_path, new_client):
    warehouse = Warehouse(str(tmp_path / "wh.duckdb"))
    warehouse.execute("CREATE SCHEMA inputs")
    day = datetime.now(UTC) - timedelta(days=2)
    known = [p for p in sandbox.truth.records("profile") if p["attributes"].get("email")][:3]
    _table(warehouse, "events_one", day, known)
    settings = EventImportSettings(table="inputs.events_one", max_wait_s=20)

    plan = run_event_import(new_client(), warehouse, EventImportSettings(table="inputs.events_one", dry_run=True),
                            run_id="dry")
    assert (plan.rows, plan.sent, plan.rejected, plan.jobs) == (6, 4, 2, 1)
    assert _events(sandbox, "Trial Ending") == [] and warehouse.query(f"SELECT count(*) FROM {LOG}")[0][0] == 0

    client = new_client()
    first = run_event_import(client, warehouse, settings, run_id="r1")
    assert (first.sent, first.confirmed, first.pending, first.rejected, first.jobs) == (4, 4, 0, 2, 1)
    assert write_calls(client) == 1
    landed = _events(sandbox, "Trial Ending")
    assert sorted(e["attributes"]["event_properties"]["$event_id"] for e in landed) == [
        "trial-0", "trial-1", "trial-2", "trial-new"]
    by_uid = {e["attributes"]["event_properties"]["$event_id"]: e for e in landed}
    assert by_uid["trial-2"]["attributes"]["event_properties"]["$value"] == 20.0
    assert by_uid["trial-2"]["attributes"]["event_properties"]["plan"] == "pro"
    assert by_uid["trial-2"]["attributes"]["event_properties"]["channel"] == "web"  # unmapped column: a property
    assert by_uid["trial-1"]["relationships"]["profile"]["data"]["id"] == known[1]["id"]
    log = _log(warehouse, "r1")
    assert log[f"Trial Ending|email:{known[0]['attributes']['email']}|trial-0"] == ("confirmed", None)
    assert log["Trial Ending|email:not-an-email|trial-bad"][0] == "rejected"
    assert "invalid email" in log["Trial Ending|email:not-an-email|trial-bad"][1]
    assert "no time" in log["Trial Ending|email:no.time@example.com|trial-notime"][1]

    client = new_client()
    again = run_event_import(client, warehouse, settings, run_id="r2")
    assert (again.sent, again.unchanged, again.confirmed) == (0, 6, 0) and write_calls(client) == 0  # 2 rejected: once
    warehouse.execute("UPDATE inputs.events_one SET value = 99 WHERE unique_id = 'trial-1'")
    changed = run_event_import(new_client(), warehouse, settings, run_id="r3")
    assert (changed.sent, changed.immutable) == (0, 1)
    assert _log(warehouse, "r3")[f"Trial Ending|email:{known[1]['attributes']['email']}|trial-1"][0] == "immutable"
    assert len(_events(sandbox, "Trial Ending")) == 4
    assert warehouse.query(f"SELECT count(*) FROM {STATE} WHERE status = 'confirmed'")[0][0] == 4

    # Back through ingest: the events partition of that day holds them.
    db = tmp_path / "ingest.duckdb"
    result = ingest(sandbox, db, "events", partition=day.replace(hour=0, minute=0, second=0, microsecond=0))
    assert result.success, failure_text(result)
    ingested = Warehouse(str(db))
    rows = ingested.query(f"SELECT id, event_properties::VARCHAR FROM {ingested.qualified('events')}")
    got = {orjson.loads(p).get("$event_id"): rid for rid, p in rows}
    for uid, event in by_uid.items():
        assert got[uid] == event["id"]


def test_a_job_klaviyo_refuses_is_split_and_the_bad_event_rejected(sandbox, tmp_path, new_client):
    warehouse = Warehouse(str(tmp_path / "wh.duckdb"))
    warehouse.execute("CREATE SCHEMA inputs")
    warehouse.execute("CREATE TABLE inputs.ev AS SELECT 'split' || i || '@example.com' AS email, 'Split Test' AS metric, "
                      "TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (i) MINUTE AS time, 's' || i AS unique_id FROM range(5) t(i)")
    warehouse.execute("UPDATE inputs.ev SET email = 'bad email@example.com' WHERE unique_id = 's3'")
    # prevalidation would catch the email; a rendering Klaviyo refuses is simulated by skipping our check:
    from klaviyo_dagster.activate import event_import

    original = event_import.email_problem
    event_import.email_problem = lambda value: None
    try:
        result = run_event_import(new_client(), warehouse, EventImportSettings(table="inputs.ev", max_wait_s=20),
                                  run_id="s1")
    finally:
        event_import.email_problem = original
    assert (result.sent, result.confirmed, result.rejected) == (4, 4, 1)
    assert "Klaviyo refused the row" in _log(warehouse, "s1")["Split Test|email:bad email@example.com|s3"][1]
    assert sorted(e["attributes"]["event_properties"]["$event_id"] for e in _events(sandbox, "Split Test")) == [
        "s0", "s1", "s2", "s4"]


def test_asset_reports_metadata_and_dry_run(sandbox, tmp_path):
    db = tmp_path / "asset.duckdb"
    warehouse = Warehouse(str(db))
    warehouse.execute("CREATE SCHEMA inputs")
    warehouse.execute("CREATE TABLE inputs.ev AS SELECT 'asset' || i || '@example.com' AS email, 'Asset Test' AS metric, "
                      "TIMESTAMP '2026-01-02 00:00:00' + INTERVAL (i) SECOND AS time FROM range(3) t(i)")
    asset = build_event_import_asset("inputs.ev")
    resources = {"klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url, rate_limit_scale=0),
                 "warehouse": WarehouseResource(database=str(db))}
    op = "klaviyo__event_import"
    dry = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {"dry_run": True}}}})
    meta = dry.asset_materializations_for_node(op)[0].metadata
    assert (meta["dry_run"].value, meta["sent"].value, meta["confirmed"].value) == (True, 3, 0)
    assert _events(sandbox, "Asset Test") == []
    real = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {"max_wait_s": 20}}}})
    meta = real.asset_materializations_for_node(op)[0].metadata
    assert (meta["sent"].value, meta["confirmed"].value, meta["jobs"].value) == (3, 3, 1)
    assert len(_events(sandbox, "Asset Test")) == 3


def test_the_three_assets_register_like_the_others():
    from klaviyo_dagster import build_activation_definitions

    resources = {"klaviyo": KlaviyoResource(api_key="pk_test", base_url="http://127.0.0.1:9"),
                 "warehouse": WarehouseResource(database="unused.duckdb")}
    defs = build_activation_definitions(events_table="inputs.events", consent_table="inputs.consent",
                                        deletions_table="inputs.forget", resources=resources)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"klaviyo/event_import", "klaviyo/subscriptions", "klaviyo/privacy_deletions",
            "inputs/events", "inputs/consent", "inputs/forget"} <= keys
    job = defs.resolve_job_def("klaviyo_activation_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "klaviyo/profile_import", "klaviyo/list_membership_sync"}  # the consent and deletion assets run on purpose
    plain = build_activation_definitions(resources=resources)
    assert "klaviyo/event_import" not in {k.to_user_string() for k in plain.resolve_asset_graph().get_all_asset_keys()}


def test_the_yaml_component_adds_them_when_their_tables_are_named():
    from klaviyo_dagster.components.scaffolder import default_attributes
    from klaviyo_dagster_tests.components.test_component import _defs, _specs

    attrs = default_attributes()
    attrs["ingest"]["objects"] = ["profiles"]
    attrs["activation"].update({"enabled": True, "events_table": "inputs.events", "consent_table": "inputs.consent",
                                "deletions_table": "inputs.forget"})
    specs = _specs(_defs(attrs))
    assert {"klaviyo/event_import", "klaviyo/subscriptions", "klaviyo/privacy_deletions"} <= set(specs)
    assert specs["klaviyo/subscriptions"].group_name == specs["klaviyo/profile_import"].group_name


@pytest.mark.parametrize("mode", plausible_values("event_unique_id_repeat"))
def test_resent_events_converge_under_every_repeat_semantics(sandbox, tmp_path, new_client, mode):
    """A run that died before confirming leaves events 'sent'; the next run sends them again, and whether
    Klaviyo refuses the repeat (400) or drops it, they end confirmed once, never duplicated."""
    warehouse = Warehouse(str(tmp_path / "wh.duckdb"))
    warehouse.execute("CREATE SCHEMA inputs")
    metric = f"Repeat {mode}"
    warehouse.execute(f"CREATE TABLE inputs.ev AS SELECT 'repeat' || i || '@example.com' AS email, '{metric}' AS metric, "
                      "TIMESTAMP '2026-02-01 00:00:00' + INTERVAL (i) MINUTE AS time, 'r' || i AS unique_id FROM range(3) t(i)")
    settings = EventImportSettings(table="inputs.ev", max_wait_s=20)
    with sandbox.semantics_override(event_unique_id_repeat=mode):
        assert run_event_import(new_client(), warehouse, settings, run_id="a").confirmed == 3
        warehouse.execute(f"UPDATE {STATE} SET status = 'sent'")  # as if the run had died before the read-back
        client = new_client()
        again = run_event_import(client, warehouse, settings, run_id="b")
    assert (again.confirmed, again.rejected, again.pending) == (3, 0, 0)
    assert write_calls(client) == (3 if mode == "request_400" else 1)  # refused whole, then one by one
    assert len(_events(sandbox, metric)) == 3
    reasons = {r[0] for r in warehouse.query(f"SELECT reason FROM {LOG} WHERE run_id = 'b'")}
    assert reasons == ({"Klaviyo already held it (its repeat was refused)"} if mode == "request_400" else {None})


def test_events_not_yet_readable_are_pending_and_the_next_run_converges(sandbox, tmp_path, new_client):
    warehouse = Warehouse(str(tmp_path / "wh.duckdb"))
    warehouse.execute("CREATE SCHEMA inputs")
    warehouse.execute("CREATE TABLE inputs.ev AS SELECT 'slow' || i || '@example.com' AS email, 'Slow Test' AS metric, "
                      "TIMESTAMP '2026-01-03 00:00:00' + INTERVAL (i) SECOND AS time FROM range(4) t(i)")
    # Klaviyo takes 3 s to process them: the first run reads back before that, however loaded the machine
    # (with the default 0.3 s a slow read-back could already find them).
    with sandbox.semantics_override(event_job_seconds=3):
        first = run_event_import(new_client(), warehouse, EventImportSettings(table="inputs.ev", max_wait_s=0),
                                 run_id="p1")
    assert (first.sent, first.confirmed, first.pending) == (4, 0, 4)  # Klaviyo had not processed them yet
    assert {r[0] for r in warehouse.query(f"SELECT status FROM {STATE}")} == {"sent"}
    assert "sent again next run" in warehouse.query(f"SELECT reason FROM {LOG} WHERE run_id = 'p1' LIMIT 1")[0][0]
    deadline = time.monotonic() + 30  # Klaviyo processes them before the next run
    while len(_events(sandbox, "Slow Test")) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    second = run_event_import(new_client(), warehouse, EventImportSettings(table="inputs.ev", max_wait_s=20), run_id="p2")
    # Sent again: Klaviyo (default sandbox reading) refuses the repeats, the read-back finds them all.
    assert (second.confirmed, second.pending, second.rejected) == (4, 0, 0)
    assert len(_events(sandbox, "Slow Test")) == 4  # sent twice, created once
