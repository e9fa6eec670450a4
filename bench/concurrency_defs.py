"""The job the `concurrency` benchmark runs: every ingest asset, multiprocess executor, env-configured.

`build_job()` is module-level so `dagster.reconstructable(build_job)` can rebuild it in each step's
subprocess. Settings come from the environment the benchmark sets: KLAVIYO_BASE_URL, KLAVIYO_API_KEY,
KLAVIYO_DUCKDB_PATH, BENCH_RATE_LIMIT_SCALE (the client's factor), BENCH_START_DATE and
BENCH_MAX_CONCURRENT (steps at once).
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource

JOB_NAME = "bench_all_ingest"
# Snapshot and incremental assets have different backfill policies; a one-partition run doesn't care.
warnings.filterwarnings("ignore", message="Asset job .* varying BackfillPolicies")


def build_job() -> dg.JobDefinition:
    """All ingest assets in one job (run it with `asset_selection` to run some of them)."""
    ingest = build_ingest_definitions(start_date=os.environ.get("BENCH_START_DATE", "2024-01-01"), schedule=False)
    resources = {
        "klaviyo": KlaviyoResource(rate_limit_scale=float(os.environ.get("BENCH_RATE_LIMIT_SCALE", "1.0"))),
        "warehouse": WarehouseResource(),
    }
    executor = dg.multiprocess_executor.configured(
        {"max_concurrent": int(os.environ.get("BENCH_MAX_CONCURRENT", "0"))}
    )
    defs = dg.Definitions(assets=list(ingest.assets or []), resources=resources, executor=executor,
                          jobs=[dg.define_asset_job(JOB_NAME, selection=dg.AssetSelection.all())])
    return defs.resolve_job_def(JOB_NAME)
