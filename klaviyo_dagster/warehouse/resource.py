"""`WarehouseResource`: the Dagster resource handing out the DuckDB `Warehouse` (built on dagster-duckdb)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar, get_dagster_logger
from pydantic import Field

from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse

# Not data/klaviyo.duckdb: DuckDB names a database after its file, and a catalog called like the schema
# ("klaviyo") makes every `klaviyo.<table>` ambiguous, in our SQL, yours and the DuckDB shell.
DEFAULT_DATABASE = "data/warehouse.duckdb"
DATABASE_ENV = "KLAVIYO_DUCKDB_PATH"


class WarehouseResource(ConfigurableResource):
    """Where ingested Klaviyo tables live: a DuckDB file and a schema.

    ``database`` defaults to ``$KLAVIYO_DUCKDB_PATH``, else ``data/warehouse.duckdb`` (its directory is
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
        default="128MB", description="DuckDB memory cap of the private staging file (it spills beyond)."
    )
    commit_memory_limit: str | None = Field(
        default="128MB",
        description="DuckDB memory cap while staged rows are copied into the warehouse (None: no cap).",
    )

    def resolved_database(self) -> str:
        """The database path actually used."""
        return self.database or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE

    def get_warehouse(self, schema: str | None = None) -> Warehouse:
        """A `Warehouse` on the configured file and schema (or ``schema``), logging through Dagster."""
        database = self.resolved_database()
        schema = schema or self.schema_
        if database != ":memory:" and Path(database).name.split(".")[0] == schema:
            raise ValueError(
                f"DuckDB names the database file {database!r} {schema!r}, like the schema {schema!r}: "
                f"then {schema}.<table> is ambiguous in every query (the activation models, your SQL, the "
                f"DuckDB shell). Rename the file (e.g. {DATABASE_ENV}=data/warehouse.duckdb) or choose another schema."
            )
        return Warehouse(
            database,
            schema,
            connection_config=self.connection_config,
            staging_memory_limit=self.staging_memory_limit,
            commit_memory_limit=self.commit_memory_limit,
            logger=get_dagster_logger("klaviyo_dagster.warehouse"),
        )

    def catalog(self) -> str:
        """DuckDB's catalog name for the configured file (its stem), as fully qualified names use it.

        Also at definition time, when ``database`` may still be an unresolved `EnvVar`."""
        database = self.database
        if isinstance(database, EnvVar):
            database = database.get_value()
        return Warehouse(database or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE, self.schema_).catalog
