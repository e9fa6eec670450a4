"""Upstream warehouse tables that activation reads, and what every activation asset shares: naming, external
asset specs, the asset decorator and builder (resources, pool, guards as Failures), and the streaming of
input rows into job batches.

A table is named ``schema.table`` (or just ``table``); its asset key is ``[schema, table]``. When no
Dagster asset builds a table (it comes from dbt, another job, a loader), it is declared as an
external :class:`dagster.AssetSpec` so lineage shows where activation reads from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    Failure,
    MaterializeResult,
    multi_asset,
)

from klaviyo_dagster.activate.render import frame_rows
from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps
from klaviyo_dagster.warehouse.activation_inputs import table_columns
from klaviyo_dagster.warehouse.sql import table_parts

if TYPE_CHECKING:
    from klaviyo_dagster.activate.jobs import JobBatch, JobPacker, PackedProfile

__all__ = ["ActivationRefused", "ActivationTarget", "activation_asset", "build_activation_run_asset",
           "check_table_name", "external_table_specs", "pack_rows", "table_asset_key", "table_columns",
           "table_parts"]

R = TypeVar("R")


class ActivationRefused(Exception):
    """A safety guard or switch stopped an activation before any write (the message says which and how to
    override)."""


def table_asset_key(table: str) -> AssetKey:
    """The asset key of a warehouse table: ``schema.table`` -> ``AssetKey([schema, table])``; characters Dagster
    refuses in a key (anything but letters, digits, ``_`` and ``-``) become ``_``."""
    return AssetKey([re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in table_parts(table)])


def check_table_name(table: str, setting: str) -> str:
    """``table`` when it is a name the warehouse can read; else a ValueError naming ``setting``."""
    try:
        table_parts(table)
    except ValueError as exc:
        raise ValueError(f"{setting}={table!r} is not a usable table name: {exc}. Set {setting} to "
                         "'schema.table' (double-quote parts with other characters)") from None
    return table


def external_table_specs(tables: Iterable[str], description: str = "Upstream warehouse table") -> list[AssetSpec]:
    """External asset specs for tables that no Dagster asset in this code location builds."""
    return [
        AssetSpec(key=table_asset_key(t), description=f"{description} `{t}` (built outside this package).",
                  group_name="activation_inputs", kinds={"duckdb"})
        for t in dict.fromkeys(tables)
    ]


@dataclass(frozen=True)
class ActivationTarget:
    """Which account and warehouse an activation asset uses, and its spec (None: the default translator's)."""

    spec: AssetSpec | None = None
    klaviyo_resource_key: str = "klaviyo"
    warehouse_resource_key: str = "warehouse"
    pool: str = KLAVIYO_POOL

    def resources(self, context: Any) -> tuple[Any, Any]:
        """(klaviyo resource, warehouse resource) of a run."""
        return (getattr(context.resources, self.klaviyo_resource_key),
                getattr(context.resources, self.warehouse_resource_key))


def activation_asset(key: str, source_table: str, description: str, target: ActivationTarget | None = None,
                     checks: Iterable[tuple[str, str]] = ()) -> Any:
    """The decorator of an activation asset reading ``source_table``: its spec from ``target`` (or the default
    translator: key ``key``, group ``klaviyo_activation``, the input table upstream), the account's
    concurrency pool, and the account's and warehouse's resources; ``checks`` are (name, description) of the
    asset checks the asset reports with each materialization."""
    target = target or ActivationTarget()
    spec = target.spec or DagsterKlaviyoTranslator().get_asset_spec(
        KlaviyoAssetProps(role="activation", name=key.split("/")[-1], key=AssetKey(key.split("/")),
                          description=description, table=source_table, deps=(table_asset_key(source_table),)))
    return multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        check_specs=[AssetCheckSpec(name, asset=spec.key, description=text) for name, text in checks],
        pool=target.pool,
        required_resource_keys={target.klaviyo_resource_key, target.warehouse_resource_key},
    )


def build_activation_run_asset(
    key: str,
    source_table: str,
    description: str,
    target: ActivationTarget | None,
    config_type: type[Config],
    run: Callable[[Any, Any, Any, AssetExecutionContext], R],
    unconfirmed: str | None = None,
    checks: Sequence[tuple[str, str]] = (),
    check_results: Callable[[R], list[AssetCheckResult]] | None = None,
) -> AssetsDefinition:
    """An activation asset (`activation_asset`) whose body opens the account's client and the warehouse and
    calls ``run(client, warehouse, config, context)``; the result's ``metadata()`` is the materialization's.

    ``ActivationRefused`` becomes a Failure that is not retried (a guard said no; nothing was written).
    When the result has ``pending`` rows (sent, outcome not confirmed by Klaviyo yet) the run fails with the
    metadata and ``unconfirmed`` as description (formatted with ``pending`` and the config's ``max_wait_s``);
    ``check_results(result)`` reports the asset checks named in ``checks``.
    """
    target = target or ActivationTarget()

    def body(context: AssetExecutionContext, config: Config) -> MaterializeResult:
        klaviyo, warehouse_resource = target.resources(context)
        warehouse = warehouse_resource.get_warehouse()
        with klaviyo.get_client() as client:
            try:
                result = run(client, warehouse, config, context)
            except ActivationRefused as exc:
                raise Failure(description=str(exc), allow_retries=False) from exc
        metadata = result.metadata()  # type: ignore[attr-defined]
        pending = getattr(result, "pending", 0)
        if unconfirmed and pending:
            wait_s = config.max_wait_s  # type: ignore[attr-defined]
            raise Failure(description=unconfirmed.format(pending=pending, max_wait_s=wait_s), metadata=metadata)
        return MaterializeResult(metadata=metadata, check_results=check_results(result) if check_results else None)

    # Dagster reads the run config's class from the annotation of ``config``.
    body.__annotations__ = {"context": AssetExecutionContext, "config": config_type, "return": MaterializeResult}
    return activation_asset(key, source_table, description, target, checks)(body)


def pack_rows(
    chunks: Iterable[pd.DataFrame],
    render: Callable[[dict[str, Any]], PackedProfile | tuple[str, str, str]],
    packer: JobPacker,
    submit: Callable[[JobBatch], None],
    reject: Callable[[list[tuple[str, str, str]]], None],
) -> None:
    """Stream input rows into job batches: ``render(row)`` gives the item to pack or a reject (key, content
    hash, reason); every full batch goes to ``submit`` as it fills, each chunk's rejects to ``reject``, and
    the last partial batch is submitted at the end."""
    for chunk in chunks:
        rejects: list[tuple[str, str, str]] = []
        for row in frame_rows(chunk):
            item = render(row)
            if isinstance(item, tuple):
                rejects.append(item)
                continue
            full = packer.add(item)
            if full:
                submit(full)
        reject(rejects)
    last = packer.flush()
    if last:
        submit(last)
