"""Small SQL helpers shared by the warehouse modules: identifier quoting and type normalisation."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes (embedded quotes doubled), safe for any attribute name."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def table_parts(table: str) -> list[str]:
    """``"schema.table"`` -> ``["schema", "table"]`` (validated: no empty or quoted parts)."""
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(p and '"' not in p for p in parts):
        raise ValueError(f"table name {table!r} must look like 'schema.table' or 'table'")
    return parts


def quote_table(table: str) -> str:
    """Quoted ``"schema"."table"`` for SQL."""
    return ".".join(quote_ident(p) for p in table_parts(table))


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


_ALIASES = {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "INT8": "BIGINT",
    "INT64": "BIGINT",
    "LONG": "BIGINT",
    "STRING": "VARCHAR",
    "TEXT": "VARCHAR",
    "BOOL": "BOOLEAN",
    "FLOAT8": "DOUBLE",
}


def normalize_type(sql_type: str) -> str:
    """Upper-case type name with common aliases folded (``timestamp with time zone`` -> TIMESTAMPTZ)."""
    t = " ".join(sql_type.strip().upper().split())
    return _ALIASES.get(t, t)
