"""Fixtures for activation tests: a private sandbox (writes stay out of the shared one), a warehouse file,
clients with fresh request counters, and the ingested-profiles stand-in built from the sandbox's truth."""

from collections.abc import Iterator

import pandas as pd
import pytest

from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse import Warehouse


@pytest.fixture(scope="module")
def sandbox() -> Iterator:
    with run_sandbox(seed=7) as handle:
        yield handle


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    wh = Warehouse(str(tmp_path_factory.mktemp("activation") / "wh.duckdb"))
    wh.execute("CREATE SCHEMA inputs")
    return wh


@pytest.fixture()
def new_client(sandbox):
    """Make a client whose counters start at zero (one per run under test)."""
    made = []

    def make() -> KlaviyoClient:
        made.append(KlaviyoClient(sandbox.api_key, base_url=sandbox.base_url, max_retries=2))
        return made[-1]

    yield make
    for client in made:
        client.close()


def write_calls(client: KlaviyoClient) -> int:
    """Requests other than GET the client sent."""
    return sum(n for key, n in client.stats.by_endpoint.items() if not key.startswith("GET "))


def load_known_profiles(sandbox, warehouse: Warehouse) -> pd.DataFrame:
    """``klaviyo.profiles_current`` as ingest would build it (id + identifiers), from the sandbox's truth."""
    frame = pd.DataFrame(
        [{"id": p["id"], **{k: p["attributes"].get(k) for k in ("email", "phone_number", "external_id")}}
         for p in sandbox.truth.records("profile")]
    )
    with warehouse.transaction() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS klaviyo")
        con.register("known", frame)
        con.execute("CREATE OR REPLACE TABLE klaviyo.profiles_current AS SELECT * FROM known")
        con.unregister("known")
    return frame
