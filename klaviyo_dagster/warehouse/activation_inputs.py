"""SQL for reading activation input tables: their columns, row counts, and the expressions the activation
diffs share (a column as trimmed text, a row's identity, its content hash, one row per key).

Activation (activate/) builds no SQL itself: it names columns and gets rows back from here and from the
per-activation modules beside this one (profile_import, list_sync, event_import, subscriptions, privacy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_dagster.warehouse.sql import quote_ident, quote_table, sql_string

NULL_TEXT = "NULL::VARCHAR"


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


def table_exists(warehouse: Any, table: str) -> bool:
    """Whether ``schema.table`` exists (as written: no quoting, as information_schema names it)."""
    return bool(warehouse.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = ?", [table])[0][0])


def count_rows(warehouse: Any, table: str) -> int:
    """Rows of ``table``."""
    return int(warehouse.query(f"SELECT count(*) FROM {quote_table(table)}")[0][0])


def text(column: str | None, available: Sequence[str], alias: str = "t") -> str:
    """``column`` of row ``alias`` as trimmed text, '' as NULL; NULL text when the column is absent."""
    if column and column in available:
        return f"nullif(trim(CAST({alias}.{quote_ident(column)} AS VARCHAR)), '')"
    return NULL_TEXT


def identity(identifiers: Mapping[str, str], prefixes: Mapping[str, str], alias: str = "t",
             fallback: str | None = None) -> str:
    """A row's identity: the first identifier present (``{kind: column}``, strongest first) as
    ``<prefix><value>`` (emails lower case, values trimmed, '' missing), else ``fallback`` (an expression)."""
    parts = []
    for kind, column in identifiers.items():
        value = f"trim(CAST({alias}.{quote_ident(column)} AS VARCHAR))"
        if kind == "email":
            value = f"lower({value})"
        parts.append(f"CASE WHEN {value} <> '' THEN {sql_string(prefixes[kind])} || {value} END")
    return "coalesce(" + ", ".join([*parts, fallback or "NULL"]) + ")"


def content_hash(version: str, columns: Sequence[str], alias: str = "t") -> str:
    """md5 of ``version`` and the JSON of the row's ``columns`` (a change of either resends the row)."""
    struct = ", ".join(f"{sql_string(c)}: {alias}.{quote_ident(c)}" for c in columns) or "'_': NULL"
    return f"md5({sql_string(version)} || CAST(to_json({{{struct}}}) AS VARCHAR))"


def one_per_key(source: str, key: str, latest_by: str | None = None) -> str:
    """SELECT of one row of ``source`` per ``key``: the latest by ``latest_by`` (when given), then the lowest
    ``__hash``."""
    order = (f"{quote_ident(latest_by)} DESC NULLS LAST, " if latest_by else "") + "__hash"
    return f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"

