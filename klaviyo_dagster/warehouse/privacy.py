"""SQL of the privacy deletions: the ledger ``privacy_deletions`` (one row per identifier, keyed by its
SHA-256 hash: no personal data of the people deleted) and the identifiers of a deletions table not yet
confirmed deleted.

:class:`DeletionPlan` unpivots the identifier columns (emails lower case, values trimmed) and anti-joins the
identifiers the ledger holds as confirmed or rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.warehouse.activation_state import SCHEMA, create_tables
from klaviyo_dagster.warehouse.sql import quote_ident, quote_table, sql_string

LEDGER = f"{SCHEMA}.privacy_deletions"
LEDGER_COLUMNS = ["sync_name", "identity_hash", "kind", "outcome", "reason", "requested_at", "confirmed_at",
                  "run_id", "changed_by"]
DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {LEDGER} (sync_name VARCHAR, identity_hash VARCHAR, kind VARCHAR, outcome VARCHAR,
        reason VARCHAR, requested_at TIMESTAMPTZ, confirmed_at TIMESTAMPTZ, run_id VARCHAR, changed_by VARCHAR)""",
)


def ensure_tables(warehouse: Any) -> None:
    """Create the deletion ledger when missing."""
    create_tables(warehouse, DDL)


def requested_at(warehouse: Any, sync_name: str, run_id: str) -> dict[str, Any]:
    """{identity hash: requested_at} of the identifiers this run recorded."""
    return dict(warehouse.query(
        f"SELECT identity_hash, requested_at FROM {LEDGER} WHERE sync_name = ? AND run_id = ?", [sync_name, run_id]))


@dataclass(frozen=True)
class DeletionPlan:
    """The identifiers of deletions ``table``: ``{kind: column}`` for kinds id, email, phone_number."""

    table: str
    identifiers: Mapping[str, str]

    def ctes(self) -> str:
        parts = []
        for kind, col in self.identifiers.items():
            value = f"trim(CAST(t.{quote_ident(col)} AS VARCHAR))"
            if kind == "email":
                value = f"lower({value})"
            parts.append(f"SELECT {sql_string(kind)} AS kind, {value} AS value FROM {quote_table(self.table)} t "
                         f"WHERE nullif({value}, '') IS NOT NULL")
        return (
            "WITH ids AS (SELECT DISTINCT kind, value, sha256(kind || ':' || value) AS hash FROM "
            f"({' UNION ALL '.join(parts)})), "
            f"done AS (SELECT identity_hash FROM {LEDGER} WHERE sync_name = $sync AND outcome IN ('confirmed', "
            "'rejected')), "
            "todo AS (SELECT i.* FROM ids i ANTI JOIN done d ON d.identity_hash = i.hash) "
        )

    def counts(self, warehouse: Any, sync_name: str) -> tuple[int, int]:
        """(distinct identifiers, of those not yet confirmed or rejected)."""
        total, todo = warehouse.query(self.ctes() + "SELECT (SELECT count(*) FROM ids), (SELECT count(*) FROM todo)",
                                      {"sync": sync_name})[0]
        return int(total), int(todo)

    def todo(self, warehouse: Any, sync_name: str) -> list[tuple[str, str, str]]:
        """(kind, value, hash) of the identifiers to delete, by kind and hash."""
        return [(r[0], r[1], r[2]) for r in warehouse.query(
            self.ctes() + "SELECT kind, value, hash FROM todo ORDER BY kind, hash", {"sync": sync_name})]
