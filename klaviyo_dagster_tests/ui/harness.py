"""`make dev` for tests and benches: the sandbox and `dagster dev` started in their own process group on
loopback (free ports, a temporary DAGSTER_HOME and warehouse), a small GraphQL client for the webserver,
and a stop that sends SIGINT to every process group it started (`dagster dev` ignores SIGTERM when
started in the background).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DevServer:
    """A running `python -m klaviyo_dagster.devserver` (sandbox + `dagster dev`)."""

    proc: subprocess.Popen
    url: str
    home: Path
    warehouse: Path
    sandbox_url: str = ""
    output: list[str] = field(default_factory=list)
    location: str = "klaviyo"
    repository: str = "__repository__"

    # -- GraphQL -------------------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> dict:
        resp = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                             timeout=timeout)
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_loaded(self, timeout: float = 120) -> dict:
        """Wait until the code location is loaded; returns its repository (jobs, asset groups)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("devserver exited:\n" + "".join(self.output[-40:]))
            try:
                data = self.graphql(
                    "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name "
                    "location { name } jobs { name } assetGroups { groupName } } } } "
                    "workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }",
                    timeout=10,
                )
                last = data
                nodes = data["repositoriesOrError"].get("nodes") or []
                entries = data["workspaceOrError"]["locationEntries"]
                errors = [e for e in entries if e["locationOrLoadError"]
                          and e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise AssertionError(f"code location failed to load: {errors}")
                if nodes and all(e["loadStatus"] == "LOADED" for e in entries):
                    self.location, self.repository = nodes[0]["location"]["name"], nodes[0]["name"]
                    return nodes[0]
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"dagster dev did not load within {timeout:.0f} s (last answer {last})")

    def asset_nodes(self) -> list[dict]:
        data = self.graphql("{ assetNodes { assetKey { path } groupName isPartitioned jobNames } }")
        return data["assetNodes"]

    def launch_run(self, job: str, *, assets: Sequence[str] | None = None, partition: str | None = None,
                   tags: dict[str, str] | None = None) -> str:
        """Launch ``job`` (or ``__ASSET_JOB`` with ``assets`` = ["klaviyo/profiles", ...]) like the UI does."""
        selector: dict[str, Any] = {"repositoryLocationName": self.location, "repositoryName": self.repository,
                                    "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": a.split("/")} for a in assets]
        run_tags = dict(tags or {})
        if partition:
            run_tags["dagster/partition"] = partition
        data = self.graphql(
            "mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
            "... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }",
            {"p": {"selector": selector,
                   "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in run_tags.items()]}}},
        )["launchPipelineExecution"]
        if data["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launch failed: {data}")
        return data["run"]["runId"]

    def launch_backfill(self, assets: Sequence[str], partitions: Sequence[str]) -> str:
        """An asset backfill over ``partitions`` (the UI's "Launch backfill"); returns its id."""
        data = self.graphql(
            "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
            "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
            {"p": {"assetSelection": [{"path": a.split("/")} for a in assets], "partitionNames": list(partitions)}},
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise AssertionError(f"backfill launch failed: {data}")
        return data["backfillId"]

    def run(self, run_id: str) -> dict:
        return self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status jobName "
            "startTime endTime tags { key value } assetSelection { path } "
            "stepStats { stepKey status startTime endTime } } } }", {"id": run_id}
        )["runOrError"]

    def wait_run(self, run_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run.get("status") in TERMINAL_RUN:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} did not finish within {timeout:.0f} s: {self.run(run_id)}")

    def run_logs(self, run_id: str) -> list[dict]:
        """Every message event of the run (level, message, step)."""
        events: list[dict] = []
        cursor = None
        while True:
            data = self.graphql(
                "query($id: ID!, $c: String) { logsForRun(runId: $id, afterCursor: $c) { __typename "
                "... on EventConnection { cursor hasMore events { __typename ... on MessageEvent { message "
                "level stepKey } } } } }", {"id": run_id, "c": cursor}
            )["logsForRun"]
            events.extend(e for e in data["events"] if "message" in e)
            cursor = data["cursor"]
            if not data["hasMore"]:
                return events

    def backfill(self, backfill_id: str) -> dict:
        return self.graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill "
            "{ id status numPartitions runs(limit: 100) { runId status jobName tags { key value } } } } }",
            {"id": backfill_id},
        )["partitionBackfillOrError"]

    def wait_backfill(self, backfill_id: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bf = self.backfill(backfill_id)
            runs = bf.get("runs") or []
            if bf.get("status") in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED") \
                    and all(r["status"] in TERMINAL_RUN for r in runs):
                return bf
            time.sleep(1)
        raise AssertionError(f"backfill {backfill_id} did not finish within {timeout:.0f} s: {self.backfill(backfill_id)}")


def _drain(proc: subprocess.Popen, sink: list[str], ready: threading.Event, found: dict[str, str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line)
        if m := re.match(r"sandbox: (http://127\.0\.0\.1:\d+)", line):
            found["sandbox"] = m.group(1)
        if line.startswith("dagster UI:"):
            ready.set()
    ready.set()


def group_pids(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def stop(server: DevServer, grace: float = 30.0) -> list[int]:
    """SIGINT to the devserver's process group (it forwards SIGINT to the sandbox's and dagster's groups),
    then SIGKILL to whatever of those groups outlives ``grace``. Returns the PIDs that had to be killed."""
    groups = {server.proc.pid, *server.child_groups} if hasattr(server, "child_groups") else {server.proc.pid}
    try:
        os.killpg(server.proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    # poll() reaps the devserver once it exits (else it lingers as a zombie of this process's group).
    while time.monotonic() < deadline and (server.proc.poll() is None or any(group_pids(g) for g in groups)):
        time.sleep(0.3)
    killed = [pid for g in groups for pid in group_pids(g)]
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(timeout=10)
    return killed


def _child_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s children (the sandbox and `dagster dev` run in their own sessions)."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[1]) == pid:
            groups.add(int(fields[2]))
    return groups


@contextmanager
def dev_server(tmp: Path, *, env: dict[str, str] | None = None, extra_args: Sequence[str] = ()) -> Iterator[DevServer]:
    """`make dev` on loopback with free ports, DAGSTER_HOME and the warehouse under ``tmp``; stopped on exit."""
    port = free_port()
    home, warehouse = tmp / "dagster_home", tmp / "warehouse.duckdb"
    run_env = {**os.environ, "KLAVIYO_DUCKDB_PATH": str(warehouse), "PYTHONUNBUFFERED": "1", **(env or {})}
    run_env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "klaviyo_dagster.devserver", "--port", "0", "--ui-port", str(port),
         "--dagster-home", str(home), *extra_args],
        cwd=ROOT, env=run_env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    )  # fmt: skip
    output: list[str] = []
    ready, found = threading.Event(), {}
    threading.Thread(target=_drain, args=(proc, output, ready, found), daemon=True).start()
    server = DevServer(proc, f"http://127.0.0.1:{port}", home, warehouse, output=output)
    try:
        if not ready.wait(90) or proc.poll() is not None:
            raise AssertionError("devserver did not start:\n" + "".join(output[-40:]))
        server.sandbox_url = found.get("sandbox", "")
        server.child_groups = _child_groups(proc.pid)  # type: ignore[attr-defined]
        yield server
    finally:
        stop(server)
