"""The sandbox's switches for behaviours Klaviyo leaves open, each value over HTTP (semantics.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import requests

from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.sandbox.semantics import SWITCHES, Semantics, parse_semantics, plausible_values
from klaviyo_dagster_tests.sandbox.test_sandbox_writes import job_body, post, row, wait_complete

ROOT = Path(__file__).resolve().parents[2]
REVISION = "2026-07-15"


@pytest.fixture(scope="module")
def sb():
    with run_sandbox(seed=11, scale="200:500") as handle:
        yield handle


@pytest.fixture
def http(sb):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                      "Content-Type": "application/vnd.api+json"})
    yield s
    s.close()


def test_defaults_are_the_strict_answers_and_bad_specs_name_the_switch():
    mine = {"list_add_unknown_id": "400", "import_invalid_row": "request_400", "identity_conflict": "error",
            "unknown_import_id": "error", "import_job_seconds": 0.3, "import_error_payload": "null"}
    snap = Semantics().snapshot()
    assert set(snap) == set(SWITCHES) and {k: snap[k] for k in mine} == mine
    assert parse_semantics("list_add_unknown_id=ignore, import_job_seconds=2.5") == {
        "list_add_unknown_id": "ignore", "import_job_seconds": 2.5}
    with pytest.raises(ValueError, match=r"unknown semantics switch 'nope'.*list_add_unknown_id=400\|ignore"):
        parse_semantics("nope=1")
    with pytest.raises(ValueError, match=r"'identity_conflict' takes error\|merge, got 'maybe'"):
        parse_semantics({"identity_conflict": "maybe"})
    with pytest.raises(ValueError, match=r"'import_job_seconds' takes <seconds>, got '-1'"):
        parse_semantics("import_job_seconds=-1")
    with pytest.raises(ValueError, match="is not NAME=VALUE"):
        parse_semantics("identity_conflict")
    with pytest.raises(ValueError, match="unknown semantics switch"):
        with run_sandbox(scale="10:10", semantics="bogus=1"):
            pass
    assert plausible_values("list_add_unknown_id") == ("400", "ignore")
    assert plausible_values("import_job_seconds") == ("0.3", "4")


def test_set_semantics_override_and_admin_route(sb, http):
    assert sb.set_semantics(identity_conflict="merge") == {"identity_conflict": "error"}
    assert sb.semantics.get("identity_conflict") == "merge"
    with sb.semantics_override("identity_conflict=error,list_add_unknown_id=ignore"):
        assert sb.semantics.get("list_add_unknown_id") == "ignore"
        assert sb.semantics.get("identity_conflict") == "error"
    assert sb.semantics.get("list_add_unknown_id") == "400"
    assert sb.semantics.get("identity_conflict") == "merge"
    sb.semantics.reset()
    r = requests.post(f"{sb.base_url}/__sandbox/semantics", json={"unknown_import_id": "sometimes"}, timeout=10)
    assert r.status_code == 400 and "takes error|create" in r.json()["error"]
    r = requests.post(f"{sb.base_url}/__sandbox/semantics", json={"unknown_import_id": "create"}, timeout=10)
    assert r.status_code == 200 and r.json()["unknown_import_id"] == "create"
    assert requests.get(f"{sb.base_url}/__sandbox/semantics", timeout=10).json()["unknown_import_id"] == "create"
    with pytest.raises(ValueError):
        sb.set_semantics(list_add_unknown_id="404")
    sb.semantics.reset()


@pytest.mark.parametrize("mode", plausible_values("list_add_unknown_id"))
def test_list_add_and_remove_with_an_unknown_profile_id(sb, http, mode):
    with sb.semantics_override(list_add_unknown_id=mode):
        r = post(http, sb, "/api/lists/", {"data": {"type": "list", "attributes": {"name": f"unknown-{mode}"}}})
        list_id = r.json()["data"]["id"]
        known = sb.truth.records("profile")[3]["id"]
        body = {"data": [{"type": "profile", "id": known}, {"type": "profile", "id": "01NOSUCHPROFILE000000000"}]}
        r = post(http, sb, f"/api/lists/{list_id}/relationships/profiles/", body)
        members = [pid for pid, _ in sb.truth.members("list", list_id)]
        if mode == "400":
            assert r.status_code == 400 and "do not exist" in r.json()["errors"][0]["detail"]
            assert r.json()["errors"][0]["source"] == {"pointer": "/data"}  # names no row
            assert members == []
        else:
            assert r.status_code == 204 and members == [known]
            r = http.delete(f"{sb.base_url}/api/lists/{list_id}/relationships/profiles/", data=orjson.dumps(body),
                            timeout=10)
            assert r.status_code == 204 and sb.truth.members("list", list_id) == []


@pytest.mark.parametrize("mode", plausible_values("import_invalid_row"))
def test_import_invalid_row_modes(sb, http, mode):
    good = f"good.{mode}@example.com"
    bad_rows = [row(email=good), row(email="not-an-email"), row(email=f"other.{mode}@example.com"),
                row(phone_number="555-0100")]
    with sb.semantics_override(import_invalid_row=mode):
        r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body(bad_rows))
    pointers = [e["source"].get("pointer") for e in r.json().get("errors", [])]
    if mode == "job_error":
        assert r.status_code == 202
        attrs, _ = wait_complete(http, sb, r.json()["data"]["id"])
        assert (attrs["completed_count"], attrs["failed_count"]) == (2, 2)
        url = f"{sb.base_url}/api/profile-bulk-import-jobs/{r.json()['data']['id']}/import-errors/"
        errs = http.get(url, timeout=10).json()["data"]
        assert [e["attributes"]["original_payload"] for e in errs] == [None, None]  # import_error_payload=null
        assert [e["attributes"]["source"]["pointer"] for e in errs] == [
            "/data/attributes/profiles/data/1/attributes/email",
            "/data/attributes/profiles/data/3/attributes/phone_number"]
        with sb.semantics_override(import_error_payload="original"):
            errs = http.get(url, timeout=10).json()["data"]
        assert [e["attributes"]["original_payload"] for e in errs] == [bad_rows[1], bad_rows[3]]
        return
    assert r.status_code == 400
    if mode == "request_400":
        assert pointers == ["/data/attributes/profiles/data/1/attributes/email",
                            "/data/attributes/profiles/data/3/attributes/phone_number"]
    elif mode == "request_400_first":
        assert pointers == ["/data/attributes/profiles/data/1/attributes/email"]
    else:
        assert pointers == ["/data/attributes/profiles"] and "2 of the 4" in r.json()["errors"][0]["detail"]
    assert all(p["attributes"]["email"] != good for p in sb.truth.records("profile"))  # nothing imported


@pytest.mark.parametrize("invalid_row", ["job_error", "request_400"])
@pytest.mark.parametrize("conflict", plausible_values("identity_conflict"))
def test_identity_conflict_modes(sb, http, conflict, invalid_row):
    both = [p for p in sb.truth.records("profile") if p["attributes"]["email"] and p["attributes"]["phone_number"]]
    slot = 20 + (conflict == "merge") * 2 + (invalid_row == "job_error") * 4
    a, b = both[slot], both[slot + 1]
    clash = row(email=a["attributes"]["email"], phone_number=b["attributes"]["phone_number"], first_name="Clash")
    with sb.semantics_override(identity_conflict=conflict, import_invalid_row=invalid_row):
        r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body([row(email="fine@example.com"), clash]))
        if conflict == "error" and invalid_row == "request_400":
            assert r.status_code == 400
            err = r.json()["errors"][0]
            assert err["code"] == "duplicate_profile" and err["source"]["pointer"] == "/data/attributes/profiles/data/1"
            assert a["id"] in err["detail"] and b["id"] in err["detail"]
            return
        attrs, _ = wait_complete(http, sb, r.json()["data"]["id"])
    merged = {p["id"]: p["attributes"] for p in sb.truth.records("profile")}
    if conflict == "error":
        assert (attrs["completed_count"], attrs["failed_count"]) == (1, 1)
        assert merged[a["id"]]["first_name"] != "Clash"
        errs = http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{r.json()['data']['id']}/import-errors/",
                        timeout=10).json()["data"]
        assert [e["attributes"]["code"] for e in errs] == ["duplicate_profile"]
    else:
        assert (attrs["completed_count"], attrs["failed_count"]) == (2, 0)
        assert merged[a["id"]]["first_name"] == "Clash"
        assert merged[a["id"]]["phone_number"] == b["attributes"]["phone_number"]


@pytest.mark.parametrize("mode", plausible_values("unknown_import_id"))
def test_unknown_import_id_modes(sb, http, mode):
    email = f"unknown-id-{mode}@example.com"
    with sb.semantics_override(unknown_import_id=mode, import_invalid_row="job_error"):
        r = post(http, sb, "/api/profile-bulk-import-jobs/",
                 job_body([{"type": "profile", "id": "01NOSUCHPROFILE000000000", "attributes": {"email": email}}]))
        attrs, _ = wait_complete(http, sb, r.json()["data"]["id"])
    created = [p for p in sb.truth.records("profile") if p["attributes"]["email"] == email]
    if mode == "error":
        assert (attrs["completed_count"], attrs["failed_count"], created) == (0, 1, [])
    else:
        assert attrs["completed_count"] == 1 and len(created) == 1 and created[0]["id"] != "01NOSUCHPROFILE000000000"


def test_slow_import_jobs(sb, http):
    with sb.semantics_override(import_job_seconds=600):
        r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body([row(email="slow.job@example.com")]))
    job_id = r.json()["data"]["id"]
    status = http.get(f"{sb.base_url}/api/profile-bulk-import-jobs/{job_id}/", timeout=10).json()["data"]["attributes"]
    assert status["status"] in ("queued", "processing") and status["completed_at"] is None
    r = post(http, sb, "/api/profile-bulk-import-jobs/", job_body([row(email="fast.job@example.com")]))
    assert wait_complete(http, sb, r.json()["data"]["id"])[0]["completed_count"] == 1


def test_cli_semantics_flag():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "klaviyo_dagster.sandbox", "--port", "0", "--scale", "10:10",
                          "--semantics", "identity_conflict=sometimes"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)
    assert out.returncode != 0 and "--semantics: semantics switch 'identity_conflict' takes error|merge" in out.stderr
