"""A bulk import job POST whose answer is lost: exactly one job carries the rows, whatever happened.

The sandbox's write faults play both sides of an unknown outcome over HTTP: the job was created and the
answer lost (``503-after``, ``reset``, ``truncate``, ``slow`` past the client's read timeout) or nothing
was created (``503``, ``reset-before``). The client never repeats the POST itself
(``KlaviyoUnknownOutcomeError``); activation finds the job among Klaviyo's recent ones and adopts it, or,
when none appeared, sends the rows again. Each run ends with every row imported, one job per row in the
sandbox's truth, and a re-run that sends nothing.
"""

from __future__ import annotations

from collections import Counter

import pytest

from klaviyo_dagster.activate import (
    ListSyncSettings,
    ProfileImportSettings,
    run_list_sync,
    run_profile_import,
)
from klaviyo_dagster.activate.state import IMPORT_JOB_ROWS, IMPORT_JOBS, LOG
from klaviyo_dagster.client import KlaviyoClient, KlaviyoServerError
from klaviyo_dagster.sandbox.semantics import plausible_values
from klaviyo_dagster_tests.activate.conftest import write_calls

IMPORT_OP = "POST /api/profile-bulk-import-jobs"
# fault -> whether the sandbox created the job behind it
FAULTS = {"503-after": True, "reset": True, "truncate": True, "slow": True, "503": False, "reset-before": False}


@pytest.fixture()
def faults(sandbox):
    sandbox.faults.configure({"spec": "", "reset_counts": True})
    yield sandbox.faults
    sandbox.faults.configure({"spec": ""})


def _client(sandbox, **kw) -> KlaviyoClient:
    kw.setdefault("max_retries", 2)
    kw.setdefault("max_backoff", 0.05)
    return KlaviyoClient(sandbox.api_key, base_url=sandbox.base_url, rate_limit_scale=0, **kw)


def _jobs_per_row(sandbox, domain: str) -> Counter:
    """How many of the sandbox's jobs carried each email at ``domain``."""
    return Counter(row["email"] for job in sandbox.truth.import_jobs() for row in job["rows"]
                   if (row.get("email") or "").endswith("@" + domain))


def _people(warehouse, table: str, domain: str, n: int) -> list[str]:
    warehouse.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT 'p' || i || '@{domain}' AS email, "
                      f"'N' || i AS first_name FROM range({n}) t(i)")
    return [f"p{i}@{domain}" for i in range(n)]


def _emails_at(sandbox, domain: str) -> set[str]:
    return {p["attributes"]["email"] for p in sandbox.truth.records("profile")
            if (p["attributes"].get("email") or "").endswith("@" + domain)}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_lost_job_post_answer_ends_in_exactly_one_job_and_a_rerun_sends_nothing(
    sandbox, warehouse, faults, fault, caplog
):
    domain = f"uo-{fault}.example.com"
    table = f"inputs.uo_{fault.replace('-', '_')}"
    emails = _people(warehouse, table, domain, 12)
    created = FAULTS[fault]
    faults.configure({"spec": f"{IMPORT_OP}={fault}:next1" + ("@1" if fault == "slow" else "")})
    settings = ProfileImportSettings(table=table, sync_name=f"uo-{fault}", unknown_outcome_wait_s=1.5)
    with _client(sandbox, read_timeout=0.4) as client:  # slow: the client gives up at 0.4 s, the job lands at 1 s
        result = run_profile_import(client, warehouse, settings, run_id=f"uo-{fault}-1")
        posts = client.stats.by_endpoint[IMPORT_OP]
    assert faults.counts.get(fault) == 1
    assert (result.imported, result.failed, result.pending) == (12, 0, 0)
    assert (result.unknown_outcomes, result.adopted_jobs) == (1, 1 if created else 0)
    # One POST when the job was found; a second only when Klaviyo surely created nothing.
    assert posts == (1 if created else 2)
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
    assert _emails_at(sandbox, domain) == set(emails)
    ledger = warehouse.query(f"SELECT status, adopted FROM {IMPORT_JOBS} WHERE sync_name = ?", [f"uo-{fault}"])
    assert ledger == [("complete", created)]
    assert warehouse.query(f"SELECT count(DISTINCT job_id) FROM {IMPORT_JOB_ROWS} WHERE sync_name = ?",
                           [f"uo-{fault}"]) == [(1,)]
    said = "found it at Klaviyo as job" if created else "no such job appeared at Klaviyo within 1.5 s: sending"
    assert said in caplog.text
    with _client(sandbox) as client:
        again = run_profile_import(client, warehouse, settings, run_id=f"uo-{fault}-2")
        assert write_calls(client) == 0
    assert (again.sent, again.unchanged, again.unknown_outcomes) == (0, 12, 0)


@pytest.mark.parametrize("invalid", plausible_values("import_invalid_row"))
@pytest.mark.parametrize("counted", plausible_values("import_job_total_count"))
def test_a_lost_answer_with_a_bad_row_under_every_reading(sandbox, warehouse, faults, invalid, counted):
    """The job that holds a bad row is still found (Klaviyo may count only valid rows in total_count),
    and the bad row is recorded failed with its reason."""
    tag = f"{invalid}-{counted}".replace("_", "-")
    domain = f"uo-bad-{tag}.example.com"
    table = f"inputs.uo_bad_{tag.replace('-', '_')}"
    emails = _people(warehouse, table, domain, 6)
    warehouse.execute(f"INSERT INTO {table} VALUES ('not-an-email@', 'Bad')")
    # Every accepted job POST loses its answer (a refused one answers its 400: nothing was written).
    faults.configure({"spec": f"{IMPORT_OP}=503-after:every1"})
    settings = ProfileImportSettings(table=table, sync_name=f"uo-bad-{tag}", unknown_outcome_wait_s=0.5,
                                     prevalidate=False)
    with sandbox.semantics_override(import_invalid_row=invalid, import_job_total_count=counted):
        with _client(sandbox) as client:
            result = run_profile_import(client, warehouse, settings, run_id=f"uo-bad-{tag}")
    assert (result.imported, result.failed, result.pending) == (6, 1, 0)
    assert result.adopted_jobs >= 1 and result.unknown_outcomes == result.adopted_jobs == len(result.job_ids)
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
    assert _emails_at(sandbox, domain) == set(emails)
    (reason,) = [r[0] for r in warehouse.query(
        f"SELECT reason FROM {LOG} WHERE sync_name = ? AND outcome = 'failed'", [f"uo-bad-{tag}"])]
    assert "invalid" in reason.lower()


@pytest.mark.parametrize("fault", ["503-after", "503"])
def test_a_run_stopped_before_it_could_resolve_leaves_the_rows_to_the_next_run(sandbox, warehouse, faults, fault):
    """The job listing fails too: the run fails with the submission 'unknown' in the ledger; the next run
    finds the job (adopts it) or, when none was created, sends the rows in one new job."""
    domain = f"uo-later-{fault}.example.com"
    table = f"inputs.uo_later_{fault.replace('-', '_')}"
    emails = _people(warehouse, table, domain, 5)
    sync = f"uo-later-{fault}"
    faults.configure({"spec": f"{IMPORT_OP}={fault}:next1,GET /api/profile-bulk-import-jobs=503:next20"})
    settings = ProfileImportSettings(table=table, sync_name=sync, unknown_outcome_wait_s=0.5)
    with _client(sandbox, max_retries=1) as client, pytest.raises(KlaviyoServerError, match="profile-bulk-import-jobs"):
        run_profile_import(client, warehouse, settings, run_id=f"{sync}-1")
    assert warehouse.query(f"SELECT status FROM {IMPORT_JOBS} WHERE sync_name = ?", [sync]) == [("unknown",)]
    faults.configure({"spec": ""})
    with _client(sandbox) as client:
        result = run_profile_import(client, warehouse, settings, run_id=f"{sync}-2")
        posts = client.stats.by_endpoint[IMPORT_OP]
    created = FAULTS[fault]
    assert (result.imported, result.pending) == (5, 0)
    assert posts == (0 if created else 1)
    assert (result.resumed_jobs, result.sent) == ((1, 0) if created else (0, 5))
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
    statuses = sorted(r[0] for r in warehouse.query(f"SELECT status FROM {IMPORT_JOBS} WHERE sync_name = ?", [sync]))
    assert statuses == (["complete"] if created else ["complete", "not_created"])


def test_list_sync_adopts_its_import_job_after_a_lost_answer(sandbox, warehouse, faults):
    """Unknown people are imported by a job that adds them to the list: that job too is found, not resent."""
    domain = "uo-list.example.com"
    emails = [f"m{i}@{domain}" for i in range(8)]
    warehouse.execute("CREATE OR REPLACE TABLE inputs.uo_audience (email VARCHAR)")
    warehouse.execute("INSERT INTO inputs.uo_audience SELECT unnest(?::VARCHAR[])", [emails])
    with _client(sandbox) as client:
        made = client.post("/api/lists", {"data": {"type": "list", "attributes": {"name": "uo list"}}})
    list_id = made["data"]["id"]
    faults.configure({"spec": f"{IMPORT_OP}=reset:next1"})
    settings = ListSyncSettings(table="inputs.uo_audience", list_id=list_id, known_profiles_table=None,
                                unknown_outcome_wait_s=0.5)
    with _client(sandbox) as client:
        result = run_list_sync(client, warehouse, settings, run_id="uo-list-1")
        assert client.stats.by_endpoint[IMPORT_OP] == 1
    assert faults.counts.get("reset") == 1
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
    members = {pid for pid, _ in sandbox.truth.members("list", list_id)}
    assert len(members) == 8
    assert result.metadata()["difference"] == 0


@pytest.mark.parametrize("repeat", plausible_values("event_unique_id_repeat"))
@pytest.mark.parametrize("fault", ["503-after", "reset"])
def test_an_event_job_repeated_after_a_lost_answer_records_each_event_once(
    sandbox, warehouse, faults, fault, repeat
):
    """Event bulk create is repeated by the client (Klaviyo keeps one event per profile, metric and
    unique_id, and activation always sends one): the repeat after a lost answer adds no event."""
    from datetime import UTC, datetime, timedelta

    from klaviyo_dagster.activate.event_import import EventImportSettings, run_event_import

    metric = f"UO {fault} {repeat}"
    table = f"inputs.uo_ev_{fault.replace('-', '_')}_{repeat}"
    emails = [p["attributes"]["email"] for p in sandbox.truth.records("profile") if p["attributes"].get("email")][:3]
    at = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None, microsecond=0)
    warehouse.execute(f"CREATE OR REPLACE TABLE {table} (email VARCHAR, unique_id VARCHAR, time TIMESTAMP, metric VARCHAR)")
    for k, email in enumerate(emails):
        warehouse.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [email, f"uo-{k}", at + timedelta(minutes=k), metric])
    faults.configure({"spec": f"POST /api/event-bulk-create-jobs={fault}:next1"})
    settings = EventImportSettings(table=table, sync_name=f"uo-ev-{fault}-{repeat}", max_wait_s=20)
    with sandbox.semantics_override(event_unique_id_repeat=repeat), _client(sandbox) as client:
        result = run_event_import(client, warehouse, settings, run_id=f"uo-ev-{fault}-{repeat}")
        assert client.stats.by_endpoint["POST /api/event-bulk-create-jobs"] >= 2  # the client repeated it
    assert faults.counts.get(fault) == 1
    assert (result.confirmed, result.pending, result.rejected) == (3, 0, 0)
    metric_ids = [m["id"] for m in sandbox.truth.records("metric") if m["attributes"]["name"] == metric]
    with _client(sandbox) as client:
        landed = [e for page in client.paginate("/api/events", {"filter": f'equals(metric_id,"{metric_ids[0]}")'})
                  for e in page["data"]]
    assert sorted(e["attributes"]["event_properties"]["$event_id"] for e in landed) == ["uo-0", "uo-1", "uo-2"]
    with _client(sandbox) as client:
        again = run_event_import(client, warehouse, settings, run_id=f"uo-ev-{fault}-{repeat}-2")
        assert write_calls(client) == 0
    assert again.sent == 0


def test_an_adopted_job_still_running_at_max_wait_stays_open_and_the_next_run_polls_it(sandbox, warehouse, faults):
    domain = "uo-slowjob.example.com"
    table = "inputs.uo_slowjob"
    emails = _people(warehouse, table, domain, 4)
    sync = "uo-slowjob"
    faults.configure({"spec": f"{IMPORT_OP}=503-after:next1"})
    settings = ProfileImportSettings(table=table, sync_name=sync, unknown_outcome_wait_s=0.5, max_wait_s=0.5)
    with sandbox.semantics_override(import_job_seconds=3), _client(sandbox) as client:
        first = run_profile_import(client, warehouse, settings, run_id=f"{sync}-1")
    assert (first.adopted_jobs, first.imported, first.pending) == (1, 0, 4)
    assert warehouse.query(f"SELECT status, adopted FROM {IMPORT_JOBS} WHERE sync_name = ?", [sync]) == [("open", True)]
    with _client(sandbox) as client:
        second = run_profile_import(client, warehouse, settings.model_copy(update={"max_wait_s": 20}),
                                    run_id=f"{sync}-2")
        assert write_calls(client) == 0  # polled, never sent in a second job
        # Adopted (found by its shape): each row is confirmed against the job's own profiles.
        assert client.stats.by_endpoint["GET /api/profile-bulk-import-jobs/{id}/profiles"] >= 1
    assert (second.resumed_jobs, second.sent, second.imported, second.pending) == (1, 0, 4, 0)
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
    assert warehouse.query(f"SELECT count(*) FROM {LOG} WHERE sync_name = ? AND outcome = 'imported'", [sync]) == [(4,)]


def test_a_foreign_job_of_the_same_shape_is_never_taken_for_done(sandbox, warehouse, faults):
    """Someone else's job of the same size lands in the window while our POST failed before Klaviyo acted:
    it is adopted by its shape, but no row counts imported unless it is among that job's profiles; the
    rows stay pending with the reason and the next run sends them in one job of their own."""
    domain = "uo-foreign.example.com"
    table = "inputs.uo_foreign"
    emails = _people(warehouse, table, domain, 3)
    sync = "uo-foreign"
    with _client(sandbox) as client:  # another app's 3-profile job, created just now
        client.post(IMPORT_OP.split(" ", 1)[1], {"data": {"type": "profile-bulk-import-job", "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": {"email": f"other{i}@elsewhere.example.com"}}
                                  for i in range(3)]}}}})
    faults.configure({"spec": f"{IMPORT_OP}=503:next1"})
    settings = ProfileImportSettings(table=table, sync_name=sync, unknown_outcome_wait_s=0.5, max_wait_s=20)
    with _client(sandbox) as client:
        first = run_profile_import(client, warehouse, settings, run_id=f"{sync}-1")
    assert (first.adopted_jobs, first.imported, first.pending) == (1, 0, 3)
    reasons = {r[0] for r in warehouse.query(
        f"SELECT reason FROM {LOG} WHERE sync_name = ? AND outcome = 'pending'", [sync])}
    assert len(reasons) == 1 and "the job may not be ours" in reasons.pop()
    with _client(sandbox) as client:
        second = run_profile_import(client, warehouse, settings, run_id=f"{sync}-2")
    assert (second.sent, second.imported, second.pending) == (3, 3, 0)
    assert _jobs_per_row(sandbox, domain) == Counter({e: 1 for e in emails})
