"""Activation under every answer the sandbox offers to what Klaviyo leaves open (sandbox/semantics.py).

For each switch value, over HTTP against the sandbox: good rows land in the same run, bad rows are
recorded with Klaviyo's reason, no row travels in two jobs, and a re-run converges (sends nothing more
for imports, difference 0 for lists).
"""

from __future__ import annotations

import math

import pytest
from dagster import materialize

from klaviyo_dagster.activate import (
    ListSyncSettings,
    ProfileImportSettings,
    run_list_sync,
    run_profile_import,
)
from klaviyo_dagster.activate.list_sync import build_list_sync_asset
from klaviyo_dagster.activate.profile_import import build_profile_import_asset
from klaviyo_dagster.activate.render import ProfileColumns
from klaviyo_dagster.activate.state import IMPORT_JOB_ROWS, LIST_LOG, LOG
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.sandbox.semantics import plausible_values
from klaviyo_dagster.warehouse import WarehouseResource
from klaviyo_dagster_tests.activate.conftest import load_known_profiles, write_calls


def _emails_at(sandbox, domain: str) -> set[str]:
    return {p["attributes"]["email"] for p in sandbox.truth.records("profile")
            if (p["attributes"].get("email") or "").endswith("@" + domain)}


def _outcomes(warehouse, sync: str, run_id: str) -> dict[str, tuple[str, str | None]]:
    return {r[0]: (r[1], r[2]) for r in warehouse.query(
        f"SELECT identity, outcome, reason FROM {LOG} WHERE sync_name = ? AND run_id = ? AND identity IS NOT NULL",
        [sync, run_id])}


def _rows_in_two_jobs(warehouse, sync: str, identity_like: str = "%") -> list[tuple]:
    """Rows that travelled in more than one job (a row Klaviyo failed may go again in a later run)."""
    return warehouse.query(f"SELECT identity, count(DISTINCT job_id) FROM {IMPORT_JOB_ROWS} WHERE sync_name = ? "
                           "AND identity LIKE ? GROUP BY 1 HAVING count(DISTINCT job_id) > 1", [sync, identity_like])


@pytest.mark.parametrize("payload", plausible_values("import_error_payload"))
@pytest.mark.parametrize("invalid", plausible_values("import_invalid_row"))
def test_bad_rows_never_block_good_ones_and_a_rerun_converges(sandbox, warehouse, new_client, invalid, payload):
    tag = f"{invalid}-{payload}".replace("_", "")
    domain, sync = f"ub-{tag}.example.com", f"ub_{tag}"
    table = f'inputs."people-{tag}"'  # a hyphenated table name (#15)
    good = [f"g{i}@{domain}" for i in range(6)]
    emails = [*good[:3], f"not-an-email-{tag}", *good[3:], f"bad {tag}@"]
    warehouse.execute(f"CREATE TABLE {table} AS SELECT unnest(?::VARCHAR[]) AS email", [emails])
    settings = ProfileImportSettings(table=table, sync_name=sync, prevalidate=False)  # Klaviyo judges the rows
    with sandbox.semantics_override(import_invalid_row=invalid, import_error_payload=payload):
        first = run_profile_import(new_client(), warehouse, settings, run_id=f"{sync}-1")
        assert (first.sent, first.imported, first.failed, first.pending) == (8, 6, 2, 0)
        assert _emails_at(sandbox, domain) == set(good)  # the good rows landed in the same run
        outcomes = _outcomes(warehouse, sync, f"{sync}-1")
        for bad in (emails[3], emails[7]):
            outcome, reason = outcomes[f"email:{bad}"]
            assert outcome == "failed" and "invalid" in reason.lower(), reason
        assert {outcomes[f"email:{g}"][0] for g in good} == {"imported"}
        assert first.isolation_calls <= 2 * 2 * math.ceil(math.log2(8))  # bounded: ~2*log2(n) per bad row
        assert _rows_in_two_jobs(warehouse, sync) == []

        # Re-run: only the two bad rows go again (and fail again); the good ones are never resent.
        client = new_client()
        again = run_profile_import(client, warehouse, settings, run_id=f"{sync}-2")
        assert (again.sent, again.imported, again.failed, again.unchanged) == (2, 0, 2, 6)
        # Fixed at the source: they land, then nothing is left to send.
        warehouse.execute(f"UPDATE {table} SET email = 'fixed-' || length(email) || '-' || "
                          f"(CASE WHEN email LIKE 'bad%' THEN 'b' ELSE 'n' END) || '@{domain}' "
                          "WHERE email NOT LIKE 'g%'")
        fixed = run_profile_import(new_client(), warehouse, settings, run_id=f"{sync}-3")
        assert (fixed.sent, fixed.imported, fixed.failed) == (2, 2, 0)
        client = new_client()
        assert run_profile_import(client, warehouse, settings).sent == 0 and write_calls(client) == 0
        assert len(_emails_at(sandbox, domain)) == 8
        assert _rows_in_two_jobs(warehouse, sync, "email:g%") == []  # a confirmed row is never sent again


@pytest.mark.parametrize("invalid", ["job_error", "request_400"])
@pytest.mark.parametrize("conflict", plausible_values("identity_conflict"))
def test_identifiers_of_two_profiles(sandbox, warehouse, new_client, conflict, invalid):
    tag = f"{conflict}-{invalid}".replace("_", "")
    domain, sync, table = f"ic-{tag}.example.com", f"ic_{tag}", f"inputs.clash_{tag.replace('-', '_')}"
    both = [p for p in sandbox.truth.records("profile") if p["attributes"]["email"] and p["attributes"]["phone_number"]]
    slot = 40 + 2 * (plausible_values("identity_conflict").index(conflict) * 2 + (invalid == "job_error"))
    a, b = both[slot], both[slot + 1]
    warehouse.execute(f"CREATE TABLE {table} (email VARCHAR, phone_number VARCHAR)")
    warehouse.execute(f"INSERT INTO {table} VALUES (?, NULL), (?, NULL), (?, ?)",
                      [f"x@{domain}", f"y@{domain}", a["attributes"]["email"], b["attributes"]["phone_number"]])
    settings = ProfileImportSettings(table=table, sync_name=sync)
    with sandbox.semantics_override(identity_conflict=conflict, import_invalid_row=invalid):
        first = run_profile_import(new_client(), warehouse, settings, run_id=f"{sync}-1")
        assert _emails_at(sandbox, domain) == {f"x@{domain}", f"y@{domain}"}
        clash = _outcomes(warehouse, sync, f"{sync}-1")[f"email:{a['attributes']['email'].lower()}"]
        if conflict == "error":
            assert (first.imported, first.failed) == (2, 1)
            assert clash[0] == "failed" and "duplicate_profile" in clash[1]
            assert run_profile_import(new_client(), warehouse, settings).sent == 1  # tried again, not done
        else:
            assert (first.imported, first.failed) == (3, 0) and clash == ("imported", None)
            assert run_profile_import(new_client(), warehouse, settings).sent == 0
        assert _rows_in_two_jobs(warehouse, sync, f"%@{domain}") == []


@pytest.mark.parametrize("mode", plausible_values("unknown_import_id"))
def test_a_row_naming_a_profile_id_that_does_not_exist(sandbox, warehouse, new_client, mode):
    domain, sync, table = f"uid-{mode}.example.com", f"uid_{mode}", f"inputs.uid_{mode}"
    warehouse.execute(f"CREATE TABLE {table} (klaviyo_profile_id VARCHAR, email VARCHAR)")
    warehouse.execute(f"INSERT INTO {table} VALUES (NULL, ?), ('01NOSUCHPROFILE0000000000', ?)",
                      [f"ok@{domain}", f"gone@{domain}"])
    settings = ProfileImportSettings(table=table, sync_name=sync, columns=ProfileColumns())
    with sandbox.semantics_override(unknown_import_id=mode):
        first = run_profile_import(new_client(), warehouse, settings, run_id=f"{sync}-1")
    row = _outcomes(warehouse, sync, f"{sync}-1")
    stale = next(k for k in row if k != f"email:ok@{domain}")
    if mode == "error":
        assert (first.imported, first.failed) == (1, 1)
        assert row[stale][0] == "failed" and "not_found" in row[stale][1]
        assert _emails_at(sandbox, domain) == {f"ok@{domain}"}
    else:
        assert (first.imported, first.failed) == (2, 0)
        assert _emails_at(sandbox, domain) == {f"ok@{domain}", f"gone@{domain}"}


def _audience(warehouse, table: str, rows: list[tuple]) -> None:
    warehouse.execute(f"CREATE OR REPLACE TABLE {table} (list_name VARCHAR, profile_id VARCHAR, email VARCHAR)")
    warehouse.execute(f"INSERT INTO {table} SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                      "unnest(?::VARCHAR[]))", [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]])


def _members(sandbox, list_id: str) -> set[str]:
    return {pid for pid, _ in sandbox.truth.members("list", list_id)}


@pytest.mark.parametrize("invalid", ["request_400", "job_error"])
@pytest.mark.parametrize("unknown_id", plausible_values("list_add_unknown_id"))
def test_list_sync_converges_with_stale_profile_ids(sandbox, warehouse, new_client, unknown_id, invalid):
    tag = f"{unknown_id}-{invalid}".replace("_", "")
    name, domain, table = f"Unknown ids {tag}", f"ls-{tag}.example.com", f"inputs.aud_{tag.replace('-', '_')}"
    known = load_known_profiles(sandbox, warehouse)
    # The warehouse still has a profile Klaviyo merged away: its id is stale, its email is live.
    stale_id, stale_email = f"01STALE{tag.upper().replace('-', '')}"[:26].ljust(26, "0"), f"merged@{domain}"
    warehouse.execute("INSERT INTO klaviyo.profiles_current (id, email) VALUES (?, ?)", [stale_id, stale_email])
    ids = list(known["id"][100:105])
    rows = [(name, pid, None) for pid in ids] + [(name, None, stale_email), (name, None, f"new@{domain}"),
                                                 (name, None, "not-an-email")]
    _audience(warehouse, table, rows)
    settings = ListSyncSettings(table=table)
    with sandbox.semantics_override(list_add_unknown_id=unknown_id, import_invalid_row=invalid):
        first = run_list_sync(new_client(), warehouse, settings)
        plan = first.lists[0]
        live = {p["attributes"]["email"]: p["id"] for p in sandbox.truth.records("profile")
                if (p["attributes"].get("email") or "").endswith("@" + domain)}
        assert set(live) == {stale_email, f"new@{domain}"}
        assert _members(sandbox, plan.list_id) == set(ids) | set(live.values())  # the good rows, this run
        assert (plan.verified, plan.missing, plan.extra, plan.difference, plan.rejected) == (True, 0, 0, 0, 1)
        assert plan.stale_ids == 1
        rejected = warehouse.query(f"SELECT identity FROM {LIST_LOG} WHERE list_id = ? AND action = 'rejected'",
                                   [plan.list_id])
        assert len(rejected) == 1 and "not-an-email" in rejected[0][0]
        assert _rows_in_two_jobs(warehouse, f"list:{plan.list_id}") == []
        client = new_client()
        again = run_list_sync(client, warehouse, settings)
        assert again.lists[0].difference == 0 and write_calls(client) == 0


def test_unfinished_import_fails_the_check_then_the_next_run_polls_it_and_passes(sandbox, warehouse):
    domain = "ls-slow.example.com"
    load_known_profiles(sandbox, warehouse)
    _audience(warehouse, "inputs.aud_slow", [("Slow list", None, f"a@{domain}"), ("Slow list", None, f"b@{domain}")])
    asset = build_list_sync_asset("inputs.aud_slow")
    resources = {"klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url),
                 "warehouse": WarehouseResource(database=warehouse.database)}
    op = "klaviyo__list_membership_sync"
    with sandbox.semantics_override(import_job_seconds=3):
        slow = materialize([asset], resources=resources, run_config={"ops": {op: {"config": {"max_wait_s": 0.3}}}})
    (check,) = slow.get_asset_check_evaluations()
    meta = slow.asset_materializations_for_node(op)[0].metadata
    assert not check.passed and check.metadata["missing"].value == 2
    assert meta["difference"].value == 2 and meta["import_pending"].value == 2
    done = materialize([asset], resources=resources)
    (check,) = done.get_asset_check_evaluations()
    meta = done.asset_materializations_for_node(op)[0].metadata
    assert check.passed and meta["difference"].value == 0 and meta["imports"].value == 0  # polled, not resent
    assert warehouse.query(f"SELECT count(*) FROM {IMPORT_JOB_ROWS} WHERE sync_name LIKE 'list:%' AND identity LIKE ?",
                           [f"%@{domain}"]) == [(2,)]


@pytest.mark.parametrize("table", ['inputs."vip list.2026"', 'inputs."odd ""quoted"" name"'])
def test_any_table_name_the_warehouse_accepts_works(sandbox, warehouse, new_client, table):
    warehouse.execute(f"CREATE TABLE {table} AS SELECT 'q' || length(?) || '@tn.example.com' AS email", [table])
    result = materialize([build_profile_import_asset(table, sync_name=f"tn{len(table)}")], resources={
        "klaviyo": KlaviyoResource(api_key=sandbox.api_key, base_url=sandbox.base_url),
        "warehouse": WarehouseResource(database=warehouse.database)})
    assert result.success
    assert f"q{len(table)}@tn.example.com" in _emails_at(sandbox, "tn.example.com")


def test_a_table_name_that_cannot_work_names_the_setting():
    with pytest.raises(ValueError, match=r"audience_table='a\.b\.c' is not a usable table name.*Set audience_table"):
        build_list_sync_asset("a.b.c")
    with pytest.raises(ValueError, match=r"profiles_table='\"unterminated' is not a usable table name"):
        build_profile_import_asset('"unterminated')


def test_a_repeated_identity_sends_the_latest_row_and_the_warning_lists_it(sandbox, warehouse, new_client, caplog):
    domain = "dup.example.com"
    warehouse.execute("CREATE TABLE inputs.dups (email VARCHAR, first_name VARCHAR, updated_at TIMESTAMP)")
    warehouse.execute(f"INSERT INTO inputs.dups VALUES ('A@{domain}', 'Old', '2026-01-01'), "
                      f"('a@{domain}', 'New', '2026-02-01'), ('b@{domain}', 'Only', NULL)")
    settings = ProfileImportSettings(table="inputs.dups", sync_name="dups", columns=ProfileColumns(exclude=("updated_at",)))
    with caplog.at_level("WARNING"):
        result = run_profile_import(new_client(), warehouse, settings)
    assert (result.duplicates, result.duplicate_identities, result.imported) == (1, [f"email:a@{domain}"], 2)
    assert f"email:a@{domain}" in caplog.text and "latest 'updated_at'" in caplog.text
    names = {p["attributes"]["email"].lower(): p["attributes"]["first_name"] for p in sandbox.truth.records("profile")
             if (p["attributes"].get("email") or "").lower().endswith("@" + domain)}
    assert names[f"a@{domain}"] == "New"
    with pytest.raises(ValueError, match="latest_by='nope' is not a column of 'inputs.dups'"):
        run_profile_import(new_client(), warehouse, ProfileImportSettings(table="inputs.dups", latest_by="nope"))
