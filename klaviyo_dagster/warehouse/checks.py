"""Data-quality and size queries the ingest assets report: violations per check over the partitions just
written, and the table's row count and columns, all in one short read connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse, _columns
from klaviyo_dagster.warehouse.sql import quote_ident

PK_UNIQUE = "primary_key_unique"
KEY_NOT_NULL = "primary_key_not_null"
CURSOR_IN_PARTITION = "cursor_in_partition"


@dataclass(frozen=True)
class TableFacts:
    """What a run reports about a table after writing: check violations, total rows, columns."""

    violations: dict[str, int]
    row_count: int
    columns: dict[str, str]


def partition_facts(
    warehouse: Warehouse,
    table: str,
    partition_column: str,
    values: Sequence[datetime],
    primary_key: Sequence[str],
    cursor_column: str | None = None,
) -> TableFacts:
    """Violations of each check within the partitions ``values`` of ``table`` (0 = passed), the whole table's
    row count and its columns: ``primary_key_unique`` (one row per key and partition), ``primary_key_not_null``,
    and with ``cursor_column`` ``cursor_in_partition`` (the cursor lies in [partition day, next day))."""
    qualified = warehouse.qualified(table)
    part = quote_ident(partition_column)
    where = f"{part} IN (SELECT unnest(?::TIMESTAMPTZ[]))"
    pk = ", ".join(quote_ident(c) for c in primary_key)
    queries: dict[str, str] = {
        PK_UNIQUE: f"SELECT count(*) FROM (SELECT {pk}, {part} FROM {qualified} WHERE {where} "
        f"GROUP BY {pk}, {part} HAVING count(*) > 1)",
        KEY_NOT_NULL: f"SELECT count(*) FROM {qualified} WHERE {where} AND ("
        + " OR ".join(f"{quote_ident(c)} IS NULL" for c in primary_key)
        + ")",
    }
    if cursor_column:
        cur = quote_ident(cursor_column)
        queries[CURSOR_IN_PARTITION] = (
            f"SELECT count(*) FROM {qualified} WHERE {where} AND "
            f"({cur} IS NULL OR {cur} < {part} OR {cur} >= {part} + INTERVAL 1 DAY)"
        )
    with warehouse.connect() as conn:
        violations = {name: int(conn.execute(sql, [list(values)]).fetchone()[0]) for name, sql in queries.items()}
        rows = int(conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0])
        columns = _columns(conn, warehouse.catalog, warehouse.schema, table)
    return TableFacts(violations, rows, columns)


def table_facts(warehouse: Warehouse, table: str) -> TableFacts:
    """Row count and columns of ``table`` (``schema.table`` or a name in the warehouse's schema)."""
    schema, _, name = table.rpartition(".")
    with warehouse.connect() as conn:
        rows = int(conn.execute(f"SELECT count(*) FROM {warehouse.qualified(table)}").fetchone()[0])
        columns = _columns(conn, warehouse.catalog, schema or warehouse.schema, name)
    return TableFacts({}, rows, columns)
