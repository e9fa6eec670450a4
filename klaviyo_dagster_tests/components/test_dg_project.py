"""The YAML route end to end with the real `dg` CLI: a fresh dg project, `dg scaffold defs`, `dg check defs`,
`dg list defs`, and `dg launch` materializing an asset into DuckDB from the sandbox, with no Python written.

The project is laid out as `create-dagster project` writes one (pyproject `[tool.dg]`, `src/<pkg>/definitions.py`
loading the defs folder) and runs in this test's interpreter environment (the package is found through its
`dagster_dg_cli.registry_modules` entry point, as for any user who pip-installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from klaviyo_dagster.ingest.objects import OBJECTS
from klaviyo_dagster.sandbox import run_sandbox

BIN = Path(sys.executable).parent
PKG = "klaviyo_yaml_project"
PYPROJECT = f"""\
[project]
name = "klaviyo-yaml-project"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["klaviyo-dagster"]

[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{PKG}"
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with run_sandbox(seed=42, scale="small") as handle:
        yield handle


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sandbox: Any) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dgproj")
    (root / "pyproject.toml").write_text(PYPROJECT)
    src = root / "src" / PKG
    (src / "defs").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "defs" / "__init__.py").write_text("")
    (src / "definitions.py").write_text(DEFINITIONS)
    home = root / ".dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "DAGSTER_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(BIN.parent),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root / "src"), env.get("PYTHONPATH", "")) if p),
        "DAGSTER_HOME": str(home),
        "KLAVIYO_API_KEY": sandbox.api_key,
        "KLAVIYO_BASE_URL": sandbox.base_url,
        "KLAVIYO_DUCKDB_PATH": str(root / "data" / "warehouse.duckdb"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    })
    return root, env


def dg(project: tuple[Path, dict[str, str]], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    root, env = project
    proc = subprocess.run([str(BIN / "dg"), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"dg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_scaffold_check_list_and_materialize_from_yaml_only(project, sandbox) -> None:
    root, _ = project
    listed = dg(project, "list", "components", "--json")
    assert "klaviyo_dagster.KlaviyoComponent" in {c["key"] for c in json.loads(listed.stdout)["items"]}

    dg(project, "scaffold", "defs", "klaviyo_dagster.KlaviyoComponent", "klaviyo")
    defs_yaml = root / "src" / PKG / "defs" / "klaviyo" / "defs.yaml"
    doc = yaml.safe_load(defs_yaml.read_text())
    assert doc["type"] == "klaviyo_dagster.KlaviyoComponent"
    attrs = doc["attributes"]
    assert attrs["klaviyo"]["api_key"] == "{{ env.KLAVIYO_API_KEY }}"
    assert set(attrs["ingest"]) >= {"start_date", "objects", "event_metrics", "campaign_channels", "lookback_days",
                                    "include_archived", "profile_subscriptions"}
    assert attrs["ingest"]["objects"] == [o.name for o in OBJECTS] and attrs["activation"]["enabled"] is False
    assert "translation" in attrs

    # The user's edits, in YAML: fewer objects, an owner, a prefix of their own.
    attrs["ingest"]["objects"] = ["profiles", "lists"]
    attrs["key_prefix"] = ["crm", "klaviyo"]
    attrs["translation"]["owners"] = ["team:crm"]
    defs_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))

    checked = dg(project, "check", "defs")
    listed = dg(project, "list", "defs", "--json")
    listing = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in listing["assets"]}
    assert set(assets) == {"crm/klaviyo/profiles", "crm/klaviyo/profiles_deleted", "crm/klaviyo/lists"}
    # The deletion sweep goes through the same translation as the object it sweeps.
    assert assets["crm/klaviyo/profiles_deleted"]["owners"] == [{"team": "crm"}]
    lists = assets["crm/klaviyo/lists"]
    assert lists["group_name"] == "klaviyo_ingest" and set(lists["kinds"]) == {"klaviyo", "duckdb"}
    assert lists["owners"] == [{"team": "crm"}]
    assert {"key": "klaviyo/role", "value": "ingest"} in lists["tags"]
    assert sorted(s["name"] for s in listing["schedules"]) == [
        "crm_klaviyo_deletion_sweep_weekly", "crm_klaviyo_ingest_daily", "crm_klaviyo_snapshots_daily"]
    for out in (checked, listed):
        assert sandbox.api_key not in out.stdout + out.stderr

    dg(project, "launch", "--assets", "crm/klaviyo/lists")  # a snapshot: unpartitioned, captures now
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        got = {r[0] for r in con.execute("SELECT id FROM warehouse.klaviyo.lists").fetchall()}
    assert got == {r["id"] for r in sandbox.truth.records("list")}
