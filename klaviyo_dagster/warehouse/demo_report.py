"""The read-only queries whose answers `make demo` prints: what landed per table, the derived exclusions,
what activation wrote that Klaviyo now holds (customer tiers, the VIP list), and the import outcomes.

Each takes an open (read-only) DuckDB connection to the warehouse file and returns rows to print.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from klaviyo_dagster.warehouse.activation_state import LOG
from klaviyo_dagster.warehouse.sql import quote_ident


def table_counts(con: Any, tables: Iterable[tuple[str, Sequence[str]]], schema: str = "klaviyo") -> list[tuple]:
    """(table, rows, distinct primary keys) of each ``(name, primary key columns)``."""
    out = []
    for name, key in tables:
        rows, ids = con.execute(
            f"SELECT count(*), count(DISTINCT ({', '.join(quote_ident(c) for c in key)},)) "
            f"FROM {quote_ident(schema)}.{quote_ident(name)}").fetchone()
        out.append((f"{schema}.{name}", rows, ids))
    return out


def exclusions_by_reason(con: Any) -> list[tuple]:
    """(channel, source, reason, rows, profiles) of ``klaviyo.exclusions``."""
    return con.execute(
        "SELECT channel, source, reason, count(*), count(DISTINCT profile_id) FROM klaviyo.exclusions "
        "GROUP BY ALL ORDER BY ALL").fetchall()


def customer_tiers(con: Any) -> list[tuple]:
    """(customer_tier property, profiles) over ``klaviyo.profiles_current``, most common first."""
    return con.execute(
        "SELECT coalesce(json_extract_string(properties, '$.customer_tier'), '(none)'), count(*) "
        "FROM klaviyo.profiles_current GROUP BY 1 ORDER BY 2 DESC").fetchall()


def list_members(con: Any, list_name: str) -> list[tuple]:
    """(list name, members) of the lists named ``list_name`` in the latest lists capture."""
    return con.execute(
        "SELECT l.name, count(m.profile_id) FROM klaviyo.lists l JOIN klaviyo.list_memberships m "
        "ON m.list_id = l.id AND m._partition = l._partition WHERE l.name = ? "
        "AND l._partition = (SELECT max(_partition) FROM klaviyo.lists) GROUP BY 1", [list_name]).fetchall()


def audience_size(con: Any, table: str = "activation_inputs.vip_audience") -> int:
    """Rows of the demo's audience table."""
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def import_outcomes(con: Any) -> list[tuple]:
    """(outcome, rows) of the profile import log."""
    return con.execute(f"SELECT outcome, count(*) FROM {LOG} GROUP BY 1 ORDER BY 1").fetchall()
