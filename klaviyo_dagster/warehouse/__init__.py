"""The warehouse layer: `WarehouseResource` -> `Warehouse` (DuckDB), partition replacement via staging."""

from klaviyo_dagster.warehouse.duckdb_warehouse import CURRENT_VIEW_SUFFIX, LOADED_AT, Warehouse, WriteResult
from klaviyo_dagster.warehouse.resource import DATABASE_ENV, DEFAULT_DATABASE, WarehouseResource

__all__ = [
    "CURRENT_VIEW_SUFFIX",
    "DATABASE_ENV",
    "DEFAULT_DATABASE",
    "LOADED_AT",
    "Warehouse",
    "WarehouseResource",
    "WriteResult",
]
