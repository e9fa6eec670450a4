"""Small SQL helpers shared by the warehouse modules: identifier quoting and type normalisation."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes (embedded quotes doubled), safe for any attribute name."""
    return '"' + str(name).replace('"', '""') + '"'


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
