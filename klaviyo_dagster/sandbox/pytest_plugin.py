"""Pytest fixtures for the Klaviyo sandbox.

`klaviyo_sandbox` (session scope): a sandbox with seed 42, scale small, rate limits off.
`klaviyo_sandbox_factory`: call it with run_sandbox's arguments to start another one; every sandbox it
started is stopped at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from klaviyo_dagster.sandbox import SandboxHandle, run_sandbox


@pytest.fixture(scope="session")
def klaviyo_sandbox() -> Iterator[SandboxHandle]:
    """A session-wide sandbox (seed 42, scale small, rate limits off)."""
    with run_sandbox(seed=42, scale="small", rate_limits="off") as handle:
        yield handle


@pytest.fixture
def klaviyo_sandbox_factory() -> Iterator[Callable[..., SandboxHandle]]:
    """Start sandboxes with other settings: factory(seed=7, scale="200:1000", rate_limits="real", ...)."""
    with ExitStack() as stack:

        def factory(**kwargs: Any) -> SandboxHandle:
            return stack.enter_context(run_sandbox(**kwargs))

        yield factory
