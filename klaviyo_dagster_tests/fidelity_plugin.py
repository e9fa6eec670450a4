"""pytest plugin: record every sandbox answer of the test run and validate them all against the spec.

Loaded by `klaviyo_dagster_tests/sandbox/test_fidelity.py` (``pytest_plugins``) or with
``-p klaviyo_dagster_tests.fidelity_plugin``. It sets ``KLAVIYO_SANDBOX_RECORD=1`` so that every sandbox the
suite starts in this process records into `klaviyo_dagster.sandbox.fidelity.global_recorder()`, and moves
the test functions flagged ``fidelity_last = True`` to the end of the run: the final fidelity test
validates every body the sandboxes answered during the whole session and fails, listing each violation,
if any breaks its schema.
The terminal summary prints how many bodies were validated.
"""

from __future__ import annotations

import os

import pytest

from klaviyo_dagster.sandbox import fidelity

_REPORT_KEY = pytest.StashKey["fidelity.FidelityReport"]()


def pytest_configure(config: pytest.Config) -> None:
    os.environ[fidelity.ENV_VAR] = "1"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    def is_last(item: pytest.Item) -> bool:
        return bool(getattr(getattr(item, "function", None), "fidelity_last", False))

    last = [item for item in items if is_last(item)]
    if last:
        items[:] = [item for item in items if not is_last(item)] + last


def store_report(config: pytest.Config, report: fidelity.FidelityReport) -> None:
    """Keep the final test's report for the terminal summary."""
    config.stash[_REPORT_KEY] = report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    report = config.stash.get(_REPORT_KEY, None)
    if report is not None:
        terminalreporter.write_line(report.summary(limit=20))
