"""The package's shape: public Dagster APIs only, imports in one direction, SQL in warehouse/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import klaviyo_dagster

PACKAGE = Path(klaviyo_dagster.__file__).parent
# Layers: a module may import its own layer and the ones to its left, never one to its right.
LOWER_LAYERS = ("client", "warehouse", "ingest", "activate")
UPPER_MODULES = ("automation", "factories", "components", "definitions")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_private_dagster_imports() -> None:
    offenders = [
        f"{p.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for p in _modules()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bdagster\._", line)
    ]
    assert offenders == []


def test_ingest_and_activate_never_import_automation_or_the_layers_above() -> None:
    offenders = []
    for layer in LOWER_LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                if any(name == f"klaviyo_dagster.{up}" or name.startswith(f"klaviyo_dagster.{up}.")
                       for up in UPPER_MODULES):
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []
    # automation/ does use ingest/activate-level code (the direction is real, not vacuous).
    automation = set().union(*(_imports(p) for p in (PACKAGE / "automation").rglob("*.py")))
    factories = _imports(PACKAGE / "factories.py")
    assert "klaviyo_dagster.automation.schedules" in factories and "klaviyo_dagster.ingest" in factories
    assert any(n.startswith("klaviyo_dagster.warehouse") for n in automation)


def test_the_sandbox_and_client_import_no_dagster_layer() -> None:
    for layer in ("sandbox", "client"):
        for path in (PACKAGE / layer).rglob("*.py"):
            names = _imports(path)
            assert not any(n == "dagster" or n.startswith("dagster.") for n in names), path
            assert not any(n.startswith(f"klaviyo_dagster.{o}") for o in ("ingest", "activate", "automation")
                           for n in names), path


SQL = re.compile(r"[\"'](?:SELECT|CREATE (?:OR REPLACE )?(?:TABLE|VIEW|SCHEMA)|INSERT INTO|DELETE FROM)\b")


def test_ingest_automation_and_demo_models_hold_no_sql() -> None:
    paths = [*(PACKAGE / "ingest").rglob("*.py"), *(PACKAGE / "automation").rglob("*.py"),
             PACKAGE / "activate" / "demo_models.py"]
    offenders = [str(p.relative_to(PACKAGE)) for p in paths if SQL.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_each_activation_run_option_is_defined_once_in_its_run_config() -> None:
    from klaviyo_dagster.activate.list_sync import ListSyncConfig, ListSyncSettings
    from klaviyo_dagster.activate.profile_import import ProfileImportConfig, ProfileImportSettings

    for config, settings in ((ProfileImportConfig, ProfileImportSettings), (ListSyncConfig, ListSyncSettings)):
        assert issubclass(settings, config)
        # No run option is restated (with its own default) on the settings class.
        assert not set(config.model_fields) & set(settings.__annotations__), settings.__name__
        assert {"dry_run", "max_wait_s"} <= set(config.model_fields) <= set(settings.model_fields)
