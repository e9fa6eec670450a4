"""Upstream warehouse tables that activation reads: naming, quoting, external asset specs, and the asset
decorator both activation assets share.

A table is named ``schema.table`` (or just ``table``); its asset key is ``[schema, table]``. When no
Dagster asset builds a table (it comes from dbt, another job, a loader), it is declared as an
external :class:`dagster.AssetSpec` so lineage shows where activation reads from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckSpec, AssetKey, AssetSpec, multi_asset

from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps
from klaviyo_dagster.warehouse.sql import quote_ident, quote_table, sql_string, table_parts

__all__ = ["ActivationTarget", "activation_asset", "external_table_specs", "quote_ident", "quote_table", "sql_string",
           "check_table_name", "table_asset_key", "table_columns", "table_parts"]


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


def table_columns(warehouse: Any, table: str) -> list[str]:
    """Column names of a warehouse table, in order; a clear error when it does not exist."""
    try:
        rows = warehouse.query(f"DESCRIBE SELECT * FROM {quote_table(table)}")
    except Exception as exc:  # duckdb.CatalogException and friends
        raise ValueError(
            f"activation input table {table!r} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "build it first or point the activation at an existing table"
        ) from exc
    return [r[0] for r in rows]


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
