"""`make demo` end to end: ingest -> models -> activation -> re-ingest, and what it prints."""

from __future__ import annotations

import re

import duckdb
import pytest

from klaviyo_dagster import demo
from klaviyo_dagster.activate.demo_models import DEFAULT_VIP_LIST
from klaviyo_dagster.ingest import OBJECTS
from klaviyo_dagster.ingest.objects import REPORTS


def test_demo_closes_the_loop(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "data" / "warehouse.duckdb"
    for var in ("KLAVIYO_BASE_URL", "KLAVIYO_API_KEY", "KLAVIYO_START_DATE"):
        monkeypatch.setenv(var, "")  # the demo sets them; monkeypatch restores them after the test
    monkeypatch.setenv("KLAVIYO_DUCKDB_PATH", str(db))
    assert demo.main() == 0
    out = capsys.readouterr().out

    # The derived exclusions cost no request; the reports one a report (one day: the last a campaign went out).
    assert re.search(r"snapshot and derived objects .*: \d+ requests", out)
    used = re.search(rf"{len(REPORTS)} Reporting API objects for \S+ \(the last day a campaign went out\): (\d+) requests", out)
    assert used and int(used.group(1)) <= 2 * len(REPORTS)  # a report and its conversion metric's lookup
    assert "klaviyo.exclusions (derived from klaviyo.profiles_current, no requests)" in out
    for reason in ("HARD_BOUNCE", "INVALID_EMAIL", "SPAM_COMPLAINT", "UNSUBSCRIBE", "USER_SUPPRESSED"):
        assert re.search(rf"email\s+suppression\s+{reason}\s+\d+", out), reason
    for obj in (*OBJECTS, *REPORTS):  # every object landed, with rows, and no key twice (profiles: one per version)
        match = re.search(rf"klaviyo\.{obj.name}\s+(\d+)\s+(\d+)", out)
        assert match and int(match.group(1)) > 0, f"{obj.name} missing from the demo's table"
        if obj.name != "profiles":
            assert match.group(1) == match.group(2), f"{obj.name}: duplicate keys"
    con = duckdb.connect(str(db), read_only=True)
    try:
        audience = con.execute("SELECT count(*) FROM activation_inputs.vip_audience").fetchone()[0]
        members = con.execute(
            "SELECT count(*) FROM klaviyo.list_memberships m JOIN klaviyo.lists l ON l.id = m.list_id "
            "AND l._partition = m._partition WHERE l.name = ? AND m._partition = (SELECT max(_partition) "
            "FROM klaviyo.list_memberships)", [DEFAULT_VIP_LIST]).fetchone()[0]
        vip_tier = con.execute(
            "SELECT count(*) FROM klaviyo.profiles_current "
            "WHERE json_extract_string(properties, '$.customer_tier') = 'vip'").fetchone()[0]
        imported = con.execute("SELECT count(*) FROM klaviyo_activation.profile_import_log "
                               "WHERE outcome = 'imported'").fetchone()[0]
        profiles = con.execute("SELECT count(*) FROM klaviyo.profiles_current").fetchone()[0]
    finally:
        con.close()
    # Re-ingested from the sandbox: the list holds exactly the audience, the tier came back on profiles.
    assert audience > 0 and members == audience and vip_tier == audience
    assert imported == profiles
    assert f"the VIP list (audience in the warehouse: {audience})" in out
