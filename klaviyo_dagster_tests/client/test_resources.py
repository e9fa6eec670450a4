"""KlaviyoResource inside a Dagster run against the sandbox: config, EnvVar, clear errors, no key leak."""

from collections.abc import Iterator
from typing import Any

import pytest
from dagster import AssetExecutionContext, DagsterInstance, EnvVar, asset, materialize

from klaviyo_dagster.client import KlaviyoAuthError
from klaviyo_dagster.resources import KlaviyoResource


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    sandbox = pytest.importorskip("klaviyo_dagster.sandbox")
    if not hasattr(sandbox, "run_sandbox"):
        pytest.skip("klaviyo_dagster.sandbox.run_sandbox is not available yet")
    with sandbox.run_sandbox(seed=42, scale="small") as h:
        yield h


@asset
def metric_count(context: AssetExecutionContext, klaviyo: KlaviyoResource) -> int:
    with klaviyo.get_client(context.log) as client:
        rows = sum(len(page["data"]) for page in client.paginate("/api/metrics"))
        context.add_output_metadata(client.stats.snapshot() | {"rows": rows})
    return rows


def test_resource_reads_key_from_env_var_and_never_records_it(
    handle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", handle.api_key)
    monkeypatch.setenv("KLAVIYO_BASE_URL", handle.base_url)
    instance = DagsterInstance.ephemeral()
    resource = KlaviyoResource(api_key=EnvVar("KLAVIYO_API_KEY"), rate_limit_scale=0)
    result = materialize([metric_count], resources={"klaviyo": resource}, instance=instance)
    assert result.success
    assert result.output_for_node("metric_count") == len(handle.truth.records("metric"))
    materialization = result.asset_materializations_for_node("metric_count")[0]
    assert materialization.metadata["requests"].value >= 1
    events = instance.all_logs(result.run_id)
    dump = "\n".join(repr(e) for e in events) + repr(instance.get_run_by_id(result.run_id))
    assert handle.api_key not in dump
    assert resource.resolved_base_url() == handle.base_url


def test_unset_key_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
    with pytest.raises(KlaviyoAuthError, match="KLAVIYO_API_KEY is not set: .*klaviyo-dagster sandbox"):
        KlaviyoResource().get_client()


def test_base_url_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLAVIYO_BASE_URL", raising=False)
    assert KlaviyoResource().resolved_base_url() == "https://a.klaviyo.com"
    monkeypatch.setenv("KLAVIYO_BASE_URL", "http://127.0.0.1:8765/")
    assert KlaviyoResource().resolved_base_url() == "http://127.0.0.1:8765"
    assert KlaviyoResource(base_url="http://x:1").resolved_base_url() == "http://x:1"


def test_ui_shows_the_env_var_name_not_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import Definitions
    from dagster._core.remote_representation.external_data import RepositorySnap

    secret = "pk_" + "5ec2e7" * 6
    monkeypatch.setenv("KLAVIYO_API_KEY", secret)
    defs = Definitions(resources={"klaviyo": KlaviyoResource(api_key=EnvVar("KLAVIYO_API_KEY"))})
    snap = RepositorySnap.from_def(defs.get_repository_def())
    (resource,) = [r for r in snap.resources if r.name == "klaviyo"]
    assert resource.configured_values["api_key"].name == "KLAVIYO_API_KEY"
    assert secret not in repr(snap)
