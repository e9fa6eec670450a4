"""The ``<table>_current`` views: the latest row per key, without what Klaviyo deleted.

- every incremental table: the latest row of each primary key (by the cursor, then ``_loaded_at``);
- a child table read through its parent (campaign messages, flow actions, flow messages): only rows of
  each parent's latest version (``version_of=(parent key, parent cursor)``), so a message removed from a
  campaign leaves the view when the campaign's next version lands;
- with ``exclude``: rows whose column is in a ``<object>_deleted`` table (ids the latest deletion sweep no
  longer saw) are left out; the deleted table is created (empty) when missing so the view always binds.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from klaviyo_dagster.warehouse.sql import quote_ident

CURRENT_VIEW_SUFFIX = "_current"
DELETED_SUFFIX = "_deleted"
LOADED_AT = "_loaded_at"

DELETED_COLUMNS = {"id": "VARCHAR", "deleted_at": "TIMESTAMPTZ", "last_cursor": "TIMESTAMPTZ",
                   "swept_at": "TIMESTAMPTZ"}  # fmt: skip


def ensure_deleted_table(conn: duckdb.DuckDBPyConnection, qualified_name: str) -> None:
    """``<object>_deleted (id, deleted_at, last_cursor, swept_at)``, created empty when missing."""
    ddl = ", ".join(f"{quote_ident(n)} {t}" for n, t in DELETED_COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified_name} ({ddl})")


def current_view_sql(
    view: str,
    table: str,
    primary_key: Sequence[str],
    latest_by: Sequence[str],
    *,
    version_of: tuple[str, str] | None = None,
    exclude: Sequence[tuple[str, str]] = (),
) -> str:
    """``CREATE OR REPLACE VIEW`` for ``view`` over ``table`` (bare names inside the body: DuckDB binds a
    view in its own schema, and bare names survive a renamed or copied file).

    ``exclude``: (column, deleted table) pairs; rows whose column is in that table's ids are left out.
    """
    key = ", ".join(quote_ident(k) for k in primary_key)
    order = ", ".join(f"{quote_ident(c)} DESC NULLS LAST" for c in [*latest_by, LOADED_AT])
    source = quote_ident(table)
    if version_of is not None:
        group, version = (quote_ident(c) for c in version_of)
        source = (
            f"(SELECT * FROM {source} QUALIFY dense_rank() OVER "
            f"(PARTITION BY {group} ORDER BY {version} DESC NULLS LAST) = 1)"
        )
    where = " AND ".join(
        f"{quote_ident(column)} NOT IN (SELECT {quote_ident('id')} FROM {quote_ident(deleted)})"
        for column, deleted in exclude
    )
    return (
        f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {source} "
        + (f"WHERE {where} " if where else "")
        + f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
    )
