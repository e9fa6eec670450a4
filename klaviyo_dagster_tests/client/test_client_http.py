"""KlaviyoClient over HTTP against the sandbox: paging, errors, retries, rate limiting, writes, key hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from klaviyo_dagster.client import (
    KlaviyoAuthError,
    KlaviyoBadRequestError,
    KlaviyoClient,
    KlaviyoConnectionError,
    KlaviyoNotFoundError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoUnknownOutcomeError,
)


def _run_sandbox() -> Any:
    sandbox = pytest.importorskip("klaviyo_dagster.sandbox")
    if not hasattr(sandbox, "run_sandbox"):
        pytest.skip("klaviyo_dagster.sandbox.run_sandbox is not available yet")
    return sandbox.run_sandbox


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    """A private sandbox for this module (faults are switched per test and switched off after)."""
    with _run_sandbox()(seed=42, scale="small", rate_limits="off") as h:
        yield h


@pytest.fixture
def faults_off(handle: Any) -> Iterator[Any]:
    yield handle.faults
    handle.faults.configure({"spec": ""})


def _client(handle: Any, **kw: Any) -> KlaviyoClient:
    kw.setdefault("rate_limit_scale", 0)
    kw.setdefault("max_backoff", 0.05)
    return KlaviyoClient(handle.api_key, base_url=handle.base_url, **kw)


def _ids(pages: list[dict]) -> list[str]:
    return [r["id"] for page in pages for r in page["data"]]


def _key_absent(key: str, *texts: str) -> None:
    for text in texts:
        assert key not in text


# -- paging ---------------------------------------------------------------------------------------
def test_profiles_paging_is_complete_with_largest_pages(handle: Any) -> None:
    with _client(handle) as client:
        pages = list(client.paginate("/api/profiles", {"page[size]": 100}))
        ids = _ids(pages)
        truth = {r["id"] for r in handle.truth.records("profile")}
        assert len(ids) == len(set(ids)) == len(truth)
        assert set(ids) == truth
        assert all(len(p["data"]) == 100 for p in pages[:-1])
        assert pages[-1]["links"].get("next") is None
        snap = client.stats.snapshot()
        assert snap["pages"] == snap["requests"] == len(pages) == -(-len(truth) // 100)
        assert snap["by_endpoint"] == {"GET /api/profiles": len(pages)}
        assert snap["retries"] == snap["throttled"] == snap["errors"] == 0


def test_events_window_paging_matches_truth(handle: Any) -> None:
    _, last = handle.truth.date_range()
    start = last.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
    end = start + timedelta(days=3)
    params = {
        "filter": f"greater-or-equal(datetime,{start:%Y-%m-%dT%H:%M:%SZ}),"
        f"less-than(datetime,{end:%Y-%m-%dT%H:%M:%SZ})",
        "page[size]": 1000,
    }
    with _client(handle) as client:
        pages = list(client.paginate("/api/events", params))
    ids = _ids(pages)
    truth = [r["id"] for r in handle.truth.records("event", "datetime", start, end)]
    assert truth, "the window should hold events"
    assert sorted(ids) == sorted(truth)
    assert all(len(p["data"]) == 1000 for p in pages[:-1])


def test_list_members_paging_matches_truth(handle: Any) -> None:
    lists = handle.truth.records("list")
    group = max(lists, key=lambda r: len(handle.truth.members("list", r["id"])))
    members = {pid for pid, _ in handle.truth.members("list", group["id"])}
    with _client(handle) as client:
        pages = list(client.paginate(f"/api/lists/{group['id']}/profiles", {"page[size]": 100}))
    assert set(_ids(pages)) == members and len(_ids(pages)) == len(members)


# -- fail fast with clear messages ----------------------------------------------------------------
def test_bad_request_names_parameter_and_does_not_retry(handle: Any) -> None:
    with _client(handle) as client:
        with pytest.raises(KlaviyoBadRequestError) as info:
            list(client.paginate("/api/profiles", {"page[size]": 101}))
        err = info.value
        assert err.status == 400 and err.detail
        assert "page[size]" in str(err) and err.detail in str(err)
        assert "GET /api/profiles" in str(err)
        assert client.stats.requests == 1 and client.stats.retries == 0


def test_bad_key_is_a_clear_401_without_leaking_it(handle: Any, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "pk_" + "f00dfeed" * 5
    caplog.set_level(logging.DEBUG)
    client = KlaviyoClient(wrong, base_url=handle.base_url, rate_limit_scale=0)
    with pytest.raises(KlaviyoAuthError) as info:
        client.get("/api/metrics")
    message = str(info.value)
    assert info.value.status == 401
    assert "check KLAVIYO_API_KEY is a private key (pk_...)" in message
    assert client.stats.requests == 1  # no retry
    _key_absent(wrong, message, repr(info.value), repr(client), caplog.text, str(info.value.args))


def test_missing_key_message() -> None:
    with pytest.raises(KlaviyoAuthError, match="KLAVIYO_API_KEY is not set: export a private API key"):
        KlaviyoClient("  ", base_url="http://127.0.0.1:9")


def test_not_found_names_the_path(handle: Any) -> None:
    with _client(handle) as client:
        with pytest.raises(KlaviyoNotFoundError) as info:
            client.get("/api/lists/NOPE404")
    assert info.value.status == 404 and "GET /api/lists/NOPE404" in str(info.value)


def test_forbidden_names_the_missing_scope(handle: Any, faults_off: Any) -> None:
    faults_off.configure({"spec": "GET /api/flows=403:next1"})
    with _client(handle) as client:
        with pytest.raises(KlaviyoAuthError) as info:
            list(client.paginate("/api/flows"))
    assert info.value.status == 403 and "flows:read" in str(info.value)
    assert client.stats.requests == 1


# -- retries ----------------------------------------------------------------------------------------
def test_retries_survive_each_fault_kind(
    handle: Any, faults_off: Any, caplog: pytest.LogCaptureFixture
) -> None:
    expected = [r["id"] for r in handle.truth.records("profile")]
    caplog.set_level(logging.WARNING, logger="klaviyo_dagster.client")
    faults_off.configure(
        {"spec": "GET /api/profiles=503:next1,GET /api/profiles=reset:next1,"
         "GET /api/profiles=truncate:next1,GET /api/profiles=429:next1,GET /api/profiles=502:next1"}
    )
    with _client(handle, max_retries=8) as client:
        ids = _ids(list(client.paginate("/api/profiles", {"page[size]": 100})))
        snap = client.stats.snapshot()
    assert sorted(ids) == sorted(expected)
    pages = -(-len(expected) // 100)
    assert snap["pages"] == pages
    assert snap["retries"] == 5 and snap["errors"] == 5 and snap["throttled"] == 1
    assert snap["requests"] == pages + 5
    retry_lines = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retry_lines) == 5 and all(r.levelno == logging.WARNING for r in retry_lines)
    _key_absent(handle.api_key, caplog.text)


def test_bounded_retries_end_in_server_error(
    handle: Any, faults_off: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    faults_off.configure({"spec": "GET /api/flows=503:next50"})
    with _client(handle, max_retries=2) as client:
        with pytest.raises(KlaviyoServerError) as info:
            list(client.paginate("/api/flows"))
        snap = client.stats.snapshot()
    message = str(info.value)
    assert "GET /api/flows" in message and "503" in message and "after 3 attempts" in message
    assert snap["requests"] == 3 and snap["retries"] == 2 and snap["errors"] == 3
    _key_absent(handle.api_key, message, caplog.text, repr(info.value))


def test_unreachable_host_is_a_connection_error() -> None:
    client = KlaviyoClient("pk_x", base_url="http://127.0.0.1:9", max_retries=1, max_backoff=0.01,
                           rate_limit_scale=0, connect_timeout=1)
    with pytest.raises(KlaviyoConnectionError, match="check KLAVIYO_BASE_URL"):
        client.get("/api/metrics")
    assert client.stats.requests == 2


# -- writes -----------------------------------------------------------------------------------------
def test_post_and_delete_list_membership(handle: Any) -> None:
    profile_ids = [r["id"] for r in handle.truth.records("profile")[:3]]
    with _client(handle) as client:
        created = client.post("/api/lists", {"data": {"type": "list", "attributes": {"name": "client-test"}}})
        list_id = created["data"]["id"]
        body = {"data": [{"type": "profile", "id": pid} for pid in profile_ids]}
        assert client.post(f"/api/lists/{list_id}/relationships/profiles", body) is None
        assert {pid for pid, _ in handle.truth.members("list", list_id)} == set(profile_ids)
        client.delete(f"/api/lists/{list_id}/relationships/profiles", {"data": body["data"][:1]})
        assert {pid for pid, _ in handle.truth.members("list", list_id)} == set(profile_ids[1:])
        assert client.stats.by_endpoint["POST /api/lists"] == 1


# -- rate limiting against a time-scaled sandbox ---------------------------------------------------------
def _count_lists(client: KlaviyoClient, list_ids: list[str], n: int) -> None:
    # XS tier: GET /api/lists/{id} with profile_count is 1 per burst window, 15 per steady window.
    for i in range(n):
        client.get(f"/api/lists/{list_ids[i % len(list_ids)]}", {"additional-fields[list]": "profile_count"})


def test_pacing_avoids_429_where_an_unpaced_client_trips_them() -> None:
    scale = 0.02  # XS tier: 1 per 20 ms, 15 per 1.2 s
    n = 45  # three steady windows
    with _run_sandbox()(seed=42, scale="small", rate_limits=f"scale:{scale}") as h:
        list_ids = [r["id"] for r in h.truth.records("list")]
        with KlaviyoClient(h.api_key, base_url=h.base_url, rate_limit_scale=scale) as paced:
            _count_lists(paced, list_ids, n)
            paced_stats = paced.stats.snapshot()
        h.set_rate_limits(f"scale:{scale}")  # fresh windows for the control run
        with KlaviyoClient(h.api_key, base_url=h.base_url, rate_limit_scale=0, max_retries=20) as unpaced:
            _count_lists(unpaced, list_ids, n)
            unpaced_stats = unpaced.stats.snapshot()
    assert paced_stats["requests"] - paced_stats["retries"] == n
    assert paced_stats["throttled"] <= 1, paced_stats
    assert paced_stats["by_endpoint"] == {"GET /api/lists/{id} [profile_count]": paced_stats["requests"]}
    # The control: the same calls without client-side pacing are throttled, and still complete.
    assert unpaced_stats["throttled"] > 0, unpaced_stats
    assert unpaced_stats["requests"] - unpaced_stats["retries"] == n


def test_spent_daily_cap_fails_fast_instead_of_sleeping() -> None:
    # The 150-a-day list creation cap becomes 150 per 72 min, steady windows 3 s: the test is far from
    # the end of a daily window unless it starts within seconds of one.
    scale = 0.05
    body = {"data": {"type": "list", "attributes": {"name": "cap"}}}
    with _run_sandbox()(seed=42, scale="small", rate_limits=f"scale:{scale}") as h:
        created = 0
        with KlaviyoClient(h.api_key, base_url=h.base_url, rate_limit_scale=scale, max_backoff=1) as first:
            with pytest.raises(KlaviyoRateLimitError, match="client counted it.*daily cap") as info:
                for _ in range(151):
                    first.post("/api/lists", body)
                    created += 1
            assert "POST /api/lists" in str(info.value)
            # Stopped by its own count of 150 sent requests: the 151st was not sent. A pacing 429 (the
            # 50 ms burst windows of this scale can fall out of step on a loaded machine) counts as sent,
            # since whether Klaviyo counts refused requests towards a daily cap is not documented.
            assert first.stats.requests == 150 and created == 150 - first.stats.throttled
        with KlaviyoClient(h.api_key, base_url=h.base_url, rate_limit_scale=scale, max_backoff=1) as second:
            for _ in range(150 - created):  # the room the sandbox still has (it does not count refusals)
                second.post("/api/lists", body)
            with pytest.raises(KlaviyoRateLimitError, match="Klaviyo answered 429.*daily cap"):
                second.post("/api/lists", body)  # refused by the server: no retry loop
            assert second.stats.requests == 151 - created and second.stats.retries == 0


def test_list_creation_is_not_repeated_after_an_unknown_outcome(handle: Any, faults_off: Any) -> None:
    before = len(handle.truth.records("list"))
    faults_off.configure({"spec": "POST /api/lists=503:next1"})
    body = {"data": {"type": "list", "attributes": {"name": "once"}}}
    with _client(handle) as client:
        with pytest.raises(KlaviyoUnknownOutcomeError, match="outcome unknown.*503.*not repeated.*find-or-create"):
            client.post("/api/lists", body)
        assert client.stats.requests == 1
        faults_off.configure({"spec": "POST /api/lists=reset:next1"})
        with pytest.raises(KlaviyoUnknownOutcomeError, match="connection broke.*after the request was sent.*not repeated"):
            client.post("/api/lists", body)
        # A 429 is a refusal, not an unknown outcome: it is waited out and repeated.
        faults_off.configure({"spec": "POST /api/lists=429:next1"})
        created = client.post("/api/lists", body)
        assert client.stats.requests == 4 and client.stats.retries == 1
    assert created["data"]["attributes"]["name"] == "once"
    # The sandbox created the list behind the reset (its answer was lost) and the last one: a repeat of
    # the reset request would have made a third.
    assert len(handle.truth.records("list")) == before + 2


IMPORT_OP = "POST /api/profile-bulk-import-jobs"


def _import_body(email: str) -> dict:
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": email}}]}}}}


def _jobs_for(handle: Any, email: str) -> int:
    return sum(1 for job in handle.truth.import_jobs() if {"email": email} in job["rows"])


@pytest.mark.parametrize(
    ("fault", "created", "says"),
    [
        ("503-after", 1, "Klaviyo answered 503"),  # the job exists, the answer is an error
        ("reset", 1, "connection broke or timed out after the request was sent"),
        ("truncate", 1, "after the request was sent"),  # the body breaks off: read as a broken connection
        ("503", 0, "Klaviyo answered 503"),  # nothing created: the client cannot tell the difference
        ("reset-before", 0, "connection broke or timed out after the request was sent"),
        ("slow@1", 1, "ReadTimeout"),  # the client stops waiting, the job is created a moment later
    ],
)
def test_an_import_job_post_is_never_repeated_after_an_unknown_outcome(
    handle: Any, faults_off: Any, fault: str, created: int, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    kind, _, param = fault.partition("@")
    faults_off.configure({"spec": f"{IMPORT_OP}={kind}:next1" + (f"@{param}" if param else "")})
    email = f"unknown.{kind}@example.com"
    with _client(handle, max_retries=5, read_timeout=0.3) as client:
        with pytest.raises(KlaviyoUnknownOutcomeError) as info:
            client.post("/api/profile-bulk-import-jobs", _import_body(email))
        assert client.stats.requests == 1 and client.stats.retries == 0
    message = str(info.value)
    # The message names the call, what happened, why it was not repeated and how to find out.
    assert message.startswith(f"{IMPORT_OP}: outcome unknown: ") and says in message
    assert "not repeated, because a repeat could create a duplicate" in message
    assert "GET /api/profile-bulk-import-jobs?sort=-created_at" in message and "total_count" in message
    _key_absent(handle.api_key, message, caplog.text, repr(info.value))
    if kind == "slow":
        import time

        time.sleep(1.0)
    assert _jobs_for(handle, email) == created


def test_an_import_job_post_is_repeated_when_klaviyo_surely_did_not_act(handle: Any, faults_off: Any) -> None:
    # A 429 is a refusal: waited out and sent again, one job.
    faults_off.configure({"spec": f"{IMPORT_OP}=429:next1@0"})
    with _client(handle, max_retries=3) as client:
        job = client.post("/api/profile-bulk-import-jobs", _import_body("throttled.once@example.com"))
        assert client.stats.requests == 2 and client.stats.retries == 1
    assert job["data"]["type"] == "profile-bulk-import-job"
    assert _jobs_for(handle, "throttled.once@example.com") == 1
    # A connection that never opened sent nothing: repeated up to max_retries, then a connection error.
    client = KlaviyoClient("pk_x", base_url="http://127.0.0.1:9", max_retries=2, max_backoff=0.01,
                           rate_limit_scale=0, connect_timeout=1)
    with pytest.raises(KlaviyoConnectionError, match="after 3 attempts"):
        client.post("/api/profile-bulk-import-jobs", _import_body("never.sent@example.com"))
    assert client.stats.requests == 3 and client.stats.retries == 2


def test_set_like_writes_are_still_repeated_after_an_unknown_outcome(handle: Any, faults_off: Any) -> None:
    list_id = handle.truth.records("list")[0]["id"]
    pid = handle.truth.records("profile")[5]["id"]
    faults_off.configure({"spec": "POST /api/lists/{id}/relationships/profiles=503-after:next1"})
    with _client(handle, max_retries=3) as client:
        client.post(f"/api/lists/{list_id}/relationships/profiles", {"data": [{"type": "profile", "id": pid}]})
        assert client.stats.requests == 2 and client.stats.retries == 1
    assert pid in {p for p, _ in handle.truth.members("list", list_id)}


def test_client_sends_the_revision_it_was_built_for_and_names_it_when_refused(handle: Any) -> None:
    from klaviyo_dagster.client import DEFAULT_REVISION

    assert DEFAULT_REVISION == "2026-07-15"
    with _client(handle) as client:
        assert client.session.headers["revision"] == DEFAULT_REVISION
        assert client.get("/api/metrics")["data"]
    with _client(handle, revision="2026-10-15") as client, pytest.raises(KlaviyoBadRequestError) as err:
        client.get("/api/metrics")
    text = str(err.value)
    assert "sent revision 2026-10-15" in text and "built for and tested against revision 2026-07-15" in text
    assert "newer than the spec" in text  # the server's own reason is kept
