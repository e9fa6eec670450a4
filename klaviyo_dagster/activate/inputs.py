"""Upstream warehouse tables that activation reads: naming, quoting, external asset specs, and the asset
decorator both activation assets share.

A table is named ``schema.table`` (or just ``table``); its asset key is ``[schema, table]``. When no
Dagster asset builds a table (it comes from dbt, another job, a loader), it is declared as an
external :class:`dagster.AssetSpec` so lineage shows where activation reads from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dagster import AssetKey, AssetSpec, asset

from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.warehouse.sql import quote_ident

__all__ = ["activation_asset", "external_table_specs", "quote_ident", "quote_table", "sql_string",
           "table_asset_key", "table_columns", "table_parts"]


def table_parts(table: str) -> list[str]:
    """``"schema.table"`` -> ``["schema", "table"]`` (validated: no empty or quoted parts)."""
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(p and '"' not in p for p in parts):
        raise ValueError(f"table name {table!r} must look like 'schema.table' or 'table'")
    return parts


def quote_table(table: str) -> str:
    """Quoted ``"schema"."table"`` for SQL."""
    return ".".join(quote_ident(p) for p in table_parts(table))


def sql_string(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def table_asset_key(table: str) -> AssetKey:
    """The asset key of a warehouse table: ``schema.table`` -> ``AssetKey([schema, table])``."""
    return AssetKey(table_parts(table))


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


def activation_asset(key: str, source_table: str, description: str) -> Any:
    """``@asset`` for an activation asset reading ``source_table``: group ``activation``, the ``klaviyo_api``
    concurrency pool, resources ``klaviyo`` and ``warehouse``, the input table as its upstream."""
    return asset(
        key=AssetKey(key.split("/")),
        deps=[table_asset_key(source_table)],
        group_name="activation",
        kinds={"klaviyo"},
        pool=KLAVIYO_POOL,
        required_resource_keys={"klaviyo", "warehouse"},
        description=description,
    )
