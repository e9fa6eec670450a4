"""`WarehouseResource`: the Dagster resource handing out the DuckDB `Warehouse` (built on dagster-duckdb)."""

from __future__ import annotations

import os
from typing import Any

from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field

from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse

DEFAULT_DATABASE = "data/klaviyo.duckdb"
DATABASE_ENV = "KLAVIYO_DUCKDB_PATH"


class WarehouseResource(ConfigurableResource):
    """Where ingested Klaviyo tables live: a DuckDB file and a schema.

    ``database`` defaults to ``$KLAVIYO_DUCKDB_PATH``, else ``data/klaviyo.duckdb`` (its directory is
    created on first use).
    """

    database: str | None = Field(
        default=None,
        description=f"Path of the DuckDB file; default ${DATABASE_ENV} or {DEFAULT_DATABASE}.",
    )
    schema_: str = Field(default="klaviyo", alias="schema", description="Schema holding the tables.")
    connection_config: dict[str, Any] = Field(
        default_factory=dict, description="DuckDB settings for warehouse connections."
    )
    staging_memory_limit: str = Field(
        default="64MB", description="DuckDB memory cap of the private staging file (it spills beyond)."
    )
    commit_memory_limit: str | None = Field(
        default="128MB",
        description="DuckDB memory cap while staged rows are copied into the warehouse (None: no cap).",
    )

    def resolved_database(self) -> str:
        """The database path actually used."""
        return self.database or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE

    def get_warehouse(self) -> Warehouse:
        """A `Warehouse` on the configured file and schema, logging through Dagster."""
        return Warehouse(
            self.resolved_database(),
            self.schema_,
            connection_config=self.connection_config,
            staging_memory_limit=self.staging_memory_limit,
            commit_memory_limit=self.commit_memory_limit,
            logger=get_dagster_logger("klaviyo_dagster.warehouse"),
        )
