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


# SQL in a string: a statement (SELECT, INSERT, DELETE, UPDATE ... SET, CREATE/ALTER/DROP, DESCRIBE, a WITH
# clause) or a piece only SQL has (joins, GROUP/ORDER BY, QUALIFY, casts). Upper case only, as the package
# writes SQL; prose in messages and docstrings is lower case or skipped.
SQL = re.compile(
    r"\b(?:SELECT|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\S+\s+SET|CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?"
    r"(?:TABLE|VIEW|SCHEMA|INDEX)|ALTER\s+TABLE|DROP\s+(?:TABLE|VIEW|SCHEMA)|DESCRIBE|WITH\s+\w+\s+AS\s*\(|"
    r"(?:ANTI|SEMI|LEFT|INNER)\s+JOIN|GROUP\s+BY|ORDER\s+BY|QUALIFY|CAST\(|::VARCHAR|BEGIN\s+TRANSACTION)\b"
)
# Calls that run SQL: a string built at the call site is SQL written outside warehouse/.
SQL_CALLS = {"execute", "executemany", "query", "read_chunks", "sql"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _has_text(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(node))


def sql_in(path: Path) -> list[str]:
    """Where ``path`` holds SQL: string constants (f-string parts too) that read as SQL, and calls of
    execute/query/read_chunks whose statement is written at the call."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            m = SQL.search(node.value)
            if m:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {m.group(0)!r} in {node.value[:60]!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS
              and node.args and _has_text(node.args[0])):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.func.attr}() of a statement written here")
    return found


def test_sql_lives_in_warehouse_only() -> None:
    """ingest/, activate/, automation/, the layers above and the demo build no SQL: they call warehouse/
    functions (the sandbox has no warehouse)."""
    paths = [p for p in _modules() if p.relative_to(PACKAGE).parts[0] not in ("warehouse", "sandbox", "spec")]
    assert any(p.relative_to(PACKAGE).parts[0] == "activate" for p in paths)
    offenders = [hit for p in paths for hit in sql_in(p)]
    assert offenders == []


def test_the_sql_detector_sees_sql() -> None:
    """The check above is not vacuous: it finds the statements warehouse/ holds, in each form they take."""
    hits = {p.name: sql_in(p) for p in (PACKAGE / "warehouse").glob("*.py")}
    assert len(hits["list_sync.py"]) >= 10 and hits["privacy.py"] and hits["event_import.py"]
    assert any("execute() of a statement" in h or "INSERT" in h for h in hits["list_sync.py"])
    assert sum(map(len, hits.values())) >= 60


def test_each_activation_run_option_is_defined_once_in_its_run_config() -> None:
    from klaviyo_dagster.activate.event_import import EventImportConfig, EventImportSettings
    from klaviyo_dagster.activate.list_sync import ListSyncConfig, ListSyncSettings
    from klaviyo_dagster.activate.privacy import PrivacyDeletionsConfig, PrivacySettings
    from klaviyo_dagster.activate.profile_import import ProfileImportConfig, ProfileImportSettings
    from klaviyo_dagster.activate.subscriptions import SubscriptionsConfig, SubscriptionSettings

    for config, settings in ((ProfileImportConfig, ProfileImportSettings), (ListSyncConfig, ListSyncSettings),
                             (EventImportConfig, EventImportSettings), (SubscriptionsConfig, SubscriptionSettings),
                             (PrivacyDeletionsConfig, PrivacySettings)):
        assert issubclass(settings, config)
        # No run option is restated (with its own default) on the settings class.
        assert not set(config.model_fields) & set(settings.__annotations__), settings.__name__
        assert {"dry_run", "max_wait_s"} <= set(config.model_fields) <= set(settings.model_fields)
