"""Cheap change fingerprints of warehouse tables (what the activation sensor compares between ticks).

Row count plus the max of an updated-at column, or, without such a column, an order-independent content
hash; several tables fold into one short digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import orjson

from klaviyo_dagster.warehouse.sql import quote_ident, quote_table


def table_fingerprint_sql(table: str, updated_column: str | None = None) -> str:
    """SQL returning one row (row count, change marker) for ``table``."""
    if updated_column:
        marker = f"CAST(max({quote_ident(updated_column)}) AS VARCHAR)"
    else:
        # bit_xor of per-row hashes: independent of row order, moves when any value changes.
        marker = "CAST(bit_xor(hash(t)) AS VARCHAR)"
    return f"SELECT count(*), {marker} FROM {quote_table(table)} t"


def tables_fingerprint(warehouse: object, tables: Mapping[str, str | None]) -> str | None:
    """A short digest of every watched table's fingerprint; None when a table does not exist yet."""
    parts = []
    for table, updated_column in tables.items():
        try:
            row = warehouse.query(table_fingerprint_sql(table, updated_column))[0]  # type: ignore[attr-defined]
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise
        parts.append([table, int(row[0]), row[1]])
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]
