"""klaviyo/subscriptions against the sandbox over HTTP: the switch, the unsubscribe guard, dry runs, convergence
(read back from the API and through ingest), double opt-in, and who-changed-what in the log."""

from datetime import UTC, datetime

import orjson
import pytest
from dagster import materialize

from klaviyo_dagster.activate.list_sync import ActivationRefused
from klaviyo_dagster.activate.subscriptions import (
    LOG,
    SubscriptionSettings,
    build_subscriptions_asset,
    run_subscriptions,
)
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox.semantics import plausible_values
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource
from klaviyo_dagster_tests.activate.conftest import write_calls
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import failure_text
from klaviyo_dagster_tests.ingest.test_ingest_sandbox import materialize as ingest

COLUMNS = "email VARCHAR, phone_number VARCHAR, channel VARCHAR, list_id VARCHAR, state VARCHAR, " \
          "consented_at TIMESTAMPTZ, reason VARCHAR"


def _consent(client, email: str) -> dict | None:
    doc = client.get("/api/profiles", {"filter": f'equals(email,"{email}")', "additional-fields[profile]": "subscriptions"})
    return doc["data"][0]["attributes"]["subscriptions"] if doc["data"] else None


def _people(sandbox, n: int, phone: bool = False) -> list[dict]:
    out = [p["attributes"] for p in sandbox.truth.records("profile")
           if p["attributes"].get("email") and (p["attributes"].get("phone_number") or not phone)]
    return out[40:40 + n]


def _list(sandbox, process: str) -> str:
    return next(g["id"] for g in sandbox.truth.records("list") if g["attributes"]["opt_in_process"] == process)


@pytest.fixture()
def warehouse(tmp_path):
    wh = Warehouse(str(tmp_path / "wh.duckdb"))
    wh.execute("CREATE SCHEMA inputs")
    wh.execute(f"CREATE TABLE inputs.consent ({COLUMNS})")
    return wh, tmp_path / "wh.duckdb"


def test_consent_converges_only_behind_the_switch_and_logs_who_changed_what(sandbox, warehouse, new_client):
    wh, _ = warehouse
    a, b = _people(sandbox, 2)
    d, e = _people(sandbox, 2, phone=True)
    single, double = _list(sandbox, "single_opt_in"), _list(sandbox, "double_opt_in")
    rows = [
        (a["email"], None, "email", single, "subscribed", None, "signed up at checkout"),
        (b["email"], None, "email", None, "unsubscribed", None, "asked support"),
        ("suppress.me@example.com", None, "email", None, "suppressed", None, None),
        (None, d["phone_number"], "sms", None, "subscribed", datetime(2025, 3, 1, tzinfo=UTC), "sms keyword"),
        ("double.optin@example.com", None, "email", double, "subscribed", None, None),
        ("fax@example.com", None, "fax", None, "subscribed", None, None),
        (None, e["phone_number"], "sms", None, "suppressed", None, None),
    ]
    for row in rows:
        wh.execute("INSERT INTO inputs.consent VALUES (?, ?, ?, ?, ?, ?, ?)", list(row))
    settings = SubscriptionSettings(table="inputs.consent", max_wait_s=20, max_unsubscribe_share=1.0)
    client = new_client()
    before_a = _consent(client, a["email"])
    before_b = _consent(client, b["email"])["email"]["marketing"]
    before_b_state = before_b["consent"] + "".join(sorted({"+" + s["reason"] for s in before_b["suppression"]}))

    with pytest.raises(ActivationRefused, match="allow_consent_changes=True"):
        run_subscriptions(client, wh, settings, run_id="off")
    assert write_calls(client) == 0 and _consent(client, a["email"]) == before_a

    plan = run_subscriptions(new_client(), wh, SubscriptionSettings(table="inputs.consent", dry_run=True), run_id="dry")
    assert plan.planned == {"subscribe": 3, "unsubscribe": 1, "suppress": 1} and plan.rejected == 2
    assert wh.query(f"SELECT count(*) FROM {LOG}")[0][0] == 0

    settings = settings.model_copy(update={"allow_consent_changes": True, "changed_by": "alice@example.com"})
    client = new_client()
    done = run_subscriptions(client, wh, settings, run_id="r1")
    assert (done.confirmed + done.already, done.awaiting_confirmation, done.pending, done.rejected) == (4, 1, 0, 2)
    assert done.sent == 5 - done.already  # people already in the desired state cost no call
    assert _consent(client, a["email"])["email"]["marketing"]["consent"] == "SUBSCRIBED"
    members = {pid for pid, _ in sandbox.truth.members("list", single)}
    assert a["email"] in {p["attributes"]["email"] for p in sandbox.truth.records("profile") if p["id"] in members}
    assert _consent(client, b["email"])["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    suppressed = _consent(client, "suppress.me@example.com")["email"]["marketing"]["suppression"]
    assert [s["reason"] for s in suppressed] == ["USER_SUPPRESSED"]
    sms = client.get("/api/profiles", {"filter": f'equals(phone_number,"{d["phone_number"]}")',
                                       "additional-fields[profile]": "subscriptions"})["data"][0]
    assert sms["attributes"]["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert sms["attributes"]["subscriptions"]["sms"]["marketing"]["consent_timestamp"].startswith("2025-03-01")
    waiting = _consent(client, "double.optin@example.com")["email"]["marketing"]  # created, not subscribed:
    assert waiting["consent"] == "NEVER_SUBSCRIBED"  # Klaviyo waits for the person's confirmation
    log = {(r[0], r[1]): r[2:] for r in wh.query(
        f"SELECT identity, channel, changed_by, action, from_state, to_state, outcome, source_reason FROM {LOG} "
        "WHERE run_id = 'r1' AND outcome <> 'sent'")}
    changed_by, action, from_state, to_state, outcome, _ = log[(b["email"], "email")]
    assert (changed_by, action, to_state) == ("alice@example.com", "unsubscribe", "unsubscribed")
    assert outcome == ("already" if before_b["consent"] == "UNSUBSCRIBED" else "confirmed")
    assert from_state == before_b_state
    assert log[(b["email"], "email")][5] == "asked support"
    assert log[("double.optin@example.com", "email")][4] == "awaiting_confirmation"
    assert log[("fax@example.com", "fax")][4] == "rejected"
    sent = wh.query(f"SELECT count(*), count(DISTINCT job_ref) FROM {LOG} WHERE run_id = 'r1' AND outcome = 'sent'")
    assert sent == [(done.sent, done.jobs)]  # each act on record as soon as Klaviyo accepted it

    client = new_client()
    again = run_subscriptions(client, wh, settings, run_id="r2")
    assert (again.sent, again.unchanged, again.rejected) == (0, 7, 0) and write_calls(client) == 0

    wh.execute("UPDATE inputs.consent SET state = 'unsuppressed' WHERE email = 'suppress.me@example.com'")
    undo = run_subscriptions(new_client(), wh, settings, run_id="r3")
    assert (undo.sent, undo.confirmed) == (1, 1)
    assert _consent(new_client(), "suppress.me@example.com")["email"]["marketing"]["suppression"] == []

    # Back through ingest: today's profiles partition holds the new consent.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    db = warehouse[1].parent / "ingest.duckdb"
    result = ingest(sandbox, db, "profiles", partition=today)
    assert result.success, failure_text(result)
    ingested = Warehouse(str(db))
    changed = {r[0]: r[1] for r in wh.query(
        f"SELECT identity, to_state FROM {LOG} WHERE outcome = 'confirmed' AND channel = 'email'")}
    assert "suppress.me@example.com" in changed
    subs = {e: orjson.loads(s) for e, s in ingested.query(
        f"SELECT email, subscriptions::VARCHAR FROM {ingested.qualified('profiles')} WHERE email IN (?, ?, ?)",
        [a["email"], b["email"], "suppress.me@example.com"])}
    assert subs["suppress.me@example.com"]["email"]["marketing"]["suppression"] == []  # unsuppressed in r3
    for email, to_state in changed.items():
        if email in (a["email"], b["email"]):
            assert subs[email]["email"]["marketing"]["consent"] == to_state.upper()


def test_unsubscribe_share_guard_refuses_before_any_write(sandbox, warehouse, new_client):
    wh, _ = warehouse
    single = _list(sandbox, "single_opt_in")
    members = [pid for pid, _ in sandbox.truth.members("list", single)]
    emails = {p["id"]: p["attributes"]["email"] for p in sandbox.truth.records("profile")}
    targets = [emails[pid] for pid in members if emails.get(pid)][:5]
    for email in targets:
        wh.execute("INSERT INTO inputs.consent (email, channel, list_id, state) VALUES (?, 'email', ?, 'unsubscribed')",
                   [email, single])
    client = new_client()
    settings = SubscriptionSettings(table="inputs.consent", allow_consent_changes=True,
                                    max_unsubscribe_share=2 / len(members))
    with pytest.raises(ActivationRefused, match="over the .* limit of one run; nothing was changed"):
        run_subscriptions(client, wh, settings)
    assert write_calls(client) == 0
    plan = run_subscriptions(new_client(), wh, SubscriptionSettings(
        table="inputs.consent", dry_run=True, max_unsubscribe_share=2 / len(members)))
    assert plan.unsubscribe_share[single] == pytest.approx(5 / len(members))


def test_asset_refuses_without_the_switch_and_runs_with_it(sandbox, warehouse):
    wh, db = warehouse
    wh.execute("INSERT INTO inputs.consent (email, channel, state) VALUES ('asset.sub@example.com', 'email', 'subscribed')")
    asset = build_subscriptions_asset("inputs.consent")
    resources = {"klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url, rate_limit_scale=0),
                 "warehouse": WarehouseResource(database=str(db))}
    op = "klaviyo__subscriptions"
    refused = materialize([asset], resources=resources, raise_on_error=False)
    assert not refused.success and "allow_consent_changes" in failure_text(refused)
    ok = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {
        "allow_consent_changes": True, "changed_by": "ops-team", "max_unsubscribe_share": 1.0}}}},
        tags={"dagster/user": "ignored@example.com"})
    meta = ok.asset_materializations_for_node(op)[0].metadata
    assert (meta["confirmed"].value, meta["changed_by"].value) == (1, "ops-team")
    assert wh.query(f"SELECT DISTINCT changed_by FROM {LOG} WHERE identity = 'asset.sub@example.com'") == [("ops-team",)]


@pytest.mark.parametrize("scope", plausible_values("unsubscribe_with_list"))
def test_unsubscribing_a_list_member_is_confirmed_under_every_reading(sandbox, warehouse, new_client, scope):
    wh, _ = warehouse
    single = _list(sandbox, "single_opt_in")
    emails = {p["id"]: p["attributes"].get("email") for p in sandbox.truth.records("profile")}
    pid, email = next((p, emails[p]) for p, _ in reversed(sandbox.truth.members("list", single)) if emails.get(p))
    wh.execute("INSERT INTO inputs.consent (email, channel, list_id, state) VALUES (?, 'email', ?, 'unsubscribed')",
               [email, single])
    settings = SubscriptionSettings(table="inputs.consent", allow_consent_changes=True, max_unsubscribe_share=1.0,
                                    max_wait_s=20, sync_name=f"scope-{scope}")
    with sandbox.semantics_override(unsubscribe_with_list=scope):
        done = run_subscriptions(new_client(), wh, settings)
    assert (done.sent, done.confirmed, done.pending) == (1, 1, 0)
    assert pid not in {p for p, _ in sandbox.truth.members("list", single)}
    marketing = _consent(new_client(), email)["email"]["marketing"]
    assert (marketing["consent"] == "UNSUBSCRIBED") == (scope == "global")
    assert (single in {s["list_id"] for s in marketing["list_suppressions"]}) == (scope == "list_only")
