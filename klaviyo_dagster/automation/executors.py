"""The executor runs use: step processes cost seconds each, so small runs execute in the run's own process.

A step of the multiprocess executor is a fresh Python process that imports Dagster and this package and
loads the definitions again (1.5-5 s on two busy cores) for 0.1-1 s of work against Klaviyo; a ten-asset
group run spent most of its time starting processes. ``KLAVIYO_EXECUTOR`` picks:

- ``in_process`` (default): steps run one after another in the run worker; no per-step start-up.
- ``forkserver``: multiprocess, but steps fork from a server that preloaded the definitions (parallel
  steps, start-up paid once per run), at most ``KLAVIYO_MAX_CONCURRENT`` (default 2) at a time.
- ``multiprocess``: Dagster's default (a fresh process per step).

Klaviyo's limits are per account and the ``klaviyo_api`` pool already caps concurrency across runs, so
parallel steps within one run buy little; a big account's long backfill is one step per object anyway.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "KLAVIYO_EXECUTOR"
CHOICES = ("in_process", "forkserver", "multiprocess")
DEFAULT = "in_process"


def run_executor(choice: str | None = None) -> dg.ExecutorDefinition:
    """The executor named by ``choice`` (default: ``KLAVIYO_EXECUTOR`` or ``in_process``)."""
    name = (choice or os.environ.get(EXECUTOR_ENV) or DEFAULT).strip().lower()
    if name == "in_process":
        return dg.in_process_executor
    max_concurrent = int(os.environ.get("KLAVIYO_MAX_CONCURRENT", "2"))
    if name == "forkserver":
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": max_concurrent,
                "start_method": {"forkserver": {"preload_modules": ["dagster", "klaviyo_dagster.definitions"]}},
            },
            name="klaviyo_forkserver_executor",
        )
    if name == "multiprocess":
        return dg.multiprocess_executor
    raise ValueError(f"{EXECUTOR_ENV}={name!r} is not one of {', '.join(CHOICES)}")
