"""The Dagster UI end to end: `make dev` (sandbox + `dagster dev`) on loopback, driven through the webserver.

- GraphQL (fast): the location loads as `klaviyo` with the named jobs and no backfill-policy warning; runs
  launched through the webserver (the snapshot job, one partition of the incremental job) succeed with no
  WARNING in their logs.
- Browser (Playwright + Debian's chromium): the lineage shows every asset; one partition of
  `klaviyo/profiles` and the README's path (the `klaviyo_ingest` group, *Materialize all*, a partition
  range) are launched from the UI and end green; the activation assets run and log what they read, found
  unchanged and sent. Screenshots for the README are written to docs/img/ when KLAVIYO_UI_SCREENSHOTS=1.
Everything is stopped by process group (SIGINT) at the end.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from klaviyo_dagster.ingest.objects import OBJECTS
from klaviyo_dagster_tests.ui.harness import ROOT, DevServer, dev_server, group_pids

UTC = timezone.utc
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "docs" / "img"
INGEST_OBJECTS = [o.name for o in OBJECTS]


def day(offset: int) -> str:
    return (datetime.now(UTC) - timedelta(days=offset)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with dev_server(tmp_path_factory.mktemp("ui")) as s:
        s.wait_loaded()
        yield s
    # Stopped by SIGINT to its process group: nothing of it is left.
    assert not group_pids(s.proc.pid)
    assert not [pid for g in s.child_groups for pid in group_pids(g)]  # type: ignore[attr-defined]


def warnings_of(server: DevServer, run_id: str) -> list[str]:
    return [f"{e['stepKey']}: {e['message']}" for e in server.run_logs(run_id) if e["level"] in ("WARNING", "ERROR")]


def test_location_loads_with_named_jobs_and_no_backfill_policy_warning(server: DevServer) -> None:
    repo = server.wait_loaded()
    assert server.location == "klaviyo"
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"klaviyo_ingest_incremental_job", "klaviyo_ingest_snapshots_job", "klaviyo_activation_job"} <= jobs
    assert not [j for j in jobs if j.startswith("__anonymous_asset_job")]
    output = "".join(server.output)
    assert "varying BackfillPolicies" not in output
    nodes = {"/".join(n["assetKey"]["path"]): n for n in server.asset_nodes()}
    for name in INGEST_OBJECTS:
        assert f"klaviyo/{name}" in nodes
    assert not nodes["klaviyo/lists"]["isPartitioned"] and nodes["klaviyo/profiles"]["isPartitioned"]


def test_runs_launched_through_the_webserver_succeed_quietly(server: DevServer) -> None:
    snap = server.launch_run("klaviyo_ingest_snapshots_job")
    inc = server.launch_run("klaviyo_ingest_incremental_job", partition=day(1))
    for run_id in (snap, inc):
        run = server.wait_run(run_id)
        assert run["status"] == "SUCCESS", (run, warnings_of(server, run_id))
        assert warnings_of(server, run_id) == []
        # In-process executor: every step ran in the run's own process.
        assert all(s["status"] == "SUCCESS" for s in run["stepStats"])
    steps = {s["stepKey"] for s in server.run(inc)["stepStats"]}
    assert steps == {f"klaviyo__{o.name}" for o in OBJECTS if o.incremental}


def _latest_run_ids(server: DevServer, n: int = 50) -> set[str]:
    data = server.graphql("query($n: Int) { runsOrError(limit: $n) { ... on Runs { results { runId } } } }", {"n": n})
    return {r["runId"] for r in data["runsOrError"]["results"]}


def _latest_backfill(server: DevServer) -> str | None:
    data = server.graphql("{ partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }")
    results = data["partitionBackfillsOrError"]["results"]
    return results[0]["id"] if results else None


def _wait_new_run(server: DevServer, before: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _latest_run_ids(server) - before
        if new:
            return new.pop()
        time.sleep(0.5)
    raise AssertionError("the UI launched no run")


def test_browser_lineage_one_partition_and_the_readme_range_path(server: DevServer) -> None:
    from playwright import sync_api  # a test dependency (pyproject [test])

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    shots = os.environ.get("KLAVIYO_UI_SCREENSHOTS") == "1"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        # Dagster's "Join the Dagster community" dialog may cover the page on first visits: skip it.
        page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                 lambda _: page.get_by_role("button", name="Skip").click())

        # The lineage of the ingest group shows every asset (a tall window: the graph draws what is in view).
        # (about 210 px a node in one column: tall enough for every object, its sweep and the models' links)
        page.set_viewport_size({"width": 1400, "height": 6400})
        page.goto(f"{server.url}/locations/klaviyo/asset-groups/klaviyo_ingest/lineage", wait_until="networkidle")
        for name in INGEST_OBJECTS:
            page.get_by_text(name, exact=True).first.wait_for()
        page.set_viewport_size({"width": 1400, "height": 900})

        # One partition of klaviyo/profiles from its asset page.
        page.goto(f"{server.url}/assets/klaviyo/profiles", wait_until="networkidle")
        page.get_by_role("button", name="Materialize…").first.click()
        dialog = page.get_by_role("dialog")
        box = dialog.get_by_placeholder("No matching partitions").or_(dialog.locator("input[type=text]").first)
        box.fill(day(2))
        box.press("Enter")
        before = _latest_run_ids(server)
        dialog.get_by_role("button", name="Launch 1 run").click()
        run_id = _wait_new_run(server, before)
        run = server.wait_run(run_id)
        assert run["status"] == "SUCCESS" and {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"] == day(2)
        assert warnings_of(server, run_id) == []

        # The README's path: the klaviyo_ingest group, Materialize all, a partition range.
        page.goto(f"{server.url}/locations/klaviyo/asset-groups/klaviyo_ingest/lineage", wait_until="networkidle")
        page.get_by_role("button", name="Materialize all…").click()
        dialog = page.get_by_role("dialog")
        box = dialog.get_by_placeholder("No matching partitions").or_(dialog.locator("input[type=text]").first)
        box.fill(f"[{day(5)}...{day(3)}]")
        box.press("Enter")
        page.wait_for_timeout(500)
        page.screenshot(path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "klaviyo-ui-range-dialog.png"))
        dialog.get_by_role("button", name=re.compile(r"^Launch")).click()
        deadline = time.monotonic() + 30
        while (backfill_id := _latest_backfill(server)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert backfill_id, "the UI launched no backfill"
        backfill = server.wait_backfill(backfill_id)
        runs = backfill["runs"]
        assert runs and all(r["status"] == "SUCCESS" for r in runs), backfill
        # The incremental objects' range lands in ONE run (single-run backfill policy); the unpartitioned
        # assets (snapshots, deletion sweeps) are captured once each, in as many runs as the backfill daemon
        # chose to launch them (it launches an unpartitioned asset when its upstreams are done, so the count
        # of those runs depends on daemon ticks, not on the package).
        group = {"/".join(n["assetKey"]["path"]): n["isPartitioned"] for n in server.asset_nodes()
                 if n["groupName"] == "klaviyo_ingest"}
        selections = {r["runId"]: ["/".join(k["path"]) for k in server.run(r["runId"])["assetSelection"] or []]
                      for r in runs}
        ranged = [r for r in runs if {"dagster/asset_partition_range_start", "dagster/asset_partition_range_end"}
                  <= {t["key"] for t in r["tags"]}]
        assert len(ranged) == 1, selections
        tags = {t["key"]: t["value"] for t in ranged[0]["tags"]}
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) \
            == (day(5), day(3))
        assert sorted(selections[ranged[0]["runId"]]) == sorted(k for k, part in group.items() if part)
        unpartitioned = [k for r in runs if r is not ranged[0] for k in selections[r["runId"]]]
        assert sorted(unpartitioned) == sorted(k for k, part in group.items() if not part), selections
        for r in runs:
            assert warnings_of(server, r["runId"]) == []

        if shots:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.goto(f"{server.url}/locations/klaviyo/asset-groups/klaviyo_ingest/lineage", wait_until="networkidle")
            page.get_by_text("Loading…").first.wait_for(state="detached")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(SHOTS / "asset-graph.png"))
            page.set_viewport_size({"width": 1400, "height": 900})
            page.goto(f"{server.url}/assets/klaviyo/profiles", wait_until="networkidle")
            page.get_by_text("Columns").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(SHOTS / "asset-columns.png"))
            ranged = [r for r in runs if any(t["key"] == "dagster/asset_partition_range_start" for t in r["tags"])]
            page.goto(f"{server.url}/runs/{(ranged or runs)[0]['runId']}", wait_until="networkidle")
            page.wait_for_timeout(2000)
            page.screenshot(path=str(SHOTS / "run.png"))
        browser.close()
