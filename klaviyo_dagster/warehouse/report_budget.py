"""The Reporting API's daily budget, counted in the warehouse: ``<schema>.report_budget``.

Klaviyo allows 225 report requests a day per account and endpoint (fixed UTC days). Every report
request is counted here before it is sent (`spend`), so separate runs, processes and retries share one
count: ``(account, endpoint, day) -> requests``. `used` reads the count of a day.
"""

from __future__ import annotations

from datetime import date

from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse
from klaviyo_dagster.warehouse.sql import quote_ident

TABLE = "report_budget"


def _ensure(warehouse: Warehouse, conn: object) -> str:
    name = warehouse.qualified(TABLE)
    schema = f"{quote_ident(warehouse.catalog)}.{quote_ident(warehouse.schema)}"
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # type: ignore[attr-defined]
    conn.execute(  # type: ignore[attr-defined]
        f"CREATE TABLE IF NOT EXISTS {name} (account VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, "
        "day DATE NOT NULL, requests INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL, "
        "PRIMARY KEY (account, endpoint, day))"
    )
    return name


def used(warehouse: Warehouse, account: str, endpoint: str, day: date) -> int:
    """Requests counted for ``account``'s ``endpoint`` on UTC ``day`` (0 when none)."""
    if not warehouse.table_exists(TABLE):
        return 0
    rows = warehouse.query(
        f"SELECT requests FROM {warehouse.qualified(TABLE)} WHERE account = ? AND endpoint = ? AND day = ?",
        [account, endpoint, day],
    )
    return int(rows[0][0]) if rows else 0


class BudgetSpent(Exception):
    """The request would take the day's count past its limit; nothing was counted."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} of {limit} requests already counted today")
        self.count = count
        self.limit = limit


def spend(warehouse: Warehouse, account: str, endpoint: str, day: date, n: int = 1, *, limit: int | None = None) -> int:
    """Add ``n`` requests to the day's count (one short transaction) and return the new count; with
    ``limit``, raise `BudgetSpent` instead (counting nothing) when the count would pass it."""
    with warehouse.transaction() as conn:
        name = _ensure(warehouse, conn)
        if limit is not None:
            row = conn.execute(
                f"SELECT requests FROM {name} WHERE account = ? AND endpoint = ? AND day = ?", [account, endpoint, day]
            ).fetchone()
            count = int(row[0]) if row else 0
            if count + n > limit:
                raise BudgetSpent(count, limit)
        conn.execute(
            f"INSERT INTO {name} VALUES (?, ?, ?, ?, now()) ON CONFLICT (account, endpoint, day) "
            "DO UPDATE SET requests = requests + excluded.requests, updated_at = now()",
            [account, endpoint, day, n],
        )
        row = conn.execute(
            f"SELECT requests FROM {name} WHERE account = ? AND endpoint = ? AND day = ?", [account, endpoint, day]
        ).fetchone()
    return int(row[0]) if row else n
