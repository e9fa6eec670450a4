"""SQL of the list membership sync: the audience's target lists, the plan of one list (kept, adds, removes,
imports) against a snapshot of its members, stale profile ids, the members snapshot and the list registry.

:class:`AudiencePlan` reads an audience table: rows are matched to the list's members by profile id (given,
or resolved through the ingested profiles by email, phone or external id) or by identifiers; members matched
by no row are removed; rows with no known profile are imported. The registry remembers the lists this
package created, per account (the key prefix), so one account never takes another's list for its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from klaviyo_dagster.warehouse.activation_inputs import NULL_TEXT, count_rows, table_exists, text
from klaviyo_dagster.warehouse.activation_state import LIST_MEMBERS, LIST_REGISTRY, LIST_STALE, append_rows
from klaviyo_dagster.warehouse.sql import quote_table

DEFAULT_ACCOUNT = "klaviyo"  # the default key prefix; registry rows written before accounts were kept belong here
IDENTIFIED = "coalesce(email, phone_number, external_id) IS NOT NULL"


@dataclass(frozen=True)
class PlanCounts:
    """Audience rows, members kept, ids to add, members to remove, rows to import (with identifiers) and rows
    that cannot be imported (a stale profile id and no identifier)."""

    audience: int
    kept: int
    adds: int
    removes: int
    imports: int
    unimportable: int


@dataclass(frozen=True)
class VerifyCounts:
    """After a sync: planned adds that are not members, members outside the audience, importable rows not
    members, and audience rows not members."""

    adds: int
    removes: int
    imports: int
    missing: int


@dataclass(frozen=True)
class AudiencePlan:
    """The plan of an audience ``table`` (columns ``available``): member identifier columns, the list id and
    name columns, and the ingested profiles that resolve identifiers to ids (``known_profiles_table``)."""

    table: str
    available: Sequence[str]
    email: str | None
    phone_number: str | None
    external_id: str | None
    profile_id: str | None
    list_id_column: str
    list_name_column: str
    known_profiles_table: str | None

    @property
    def has_list_columns(self) -> bool:
        return self.list_id_column in self.available or self.list_name_column in self.available

    def _col(self, name: str | None) -> str:
        return text(name, self.available, alias="a")

    def _target_expr(self) -> str:
        lid, lname = self._col(self.list_id_column), self._col(self.list_name_column)
        fixed = f"'id:' || {lid}" if lid != NULL_TEXT else "NULL"
        return f"coalesce({fixed}, 'name:' || {lname})"

    def rows(self, warehouse: Any) -> int:
        return count_rows(warehouse, self.table)

    def targets(self, warehouse: Any) -> list[tuple[str | None, str | None, int]]:
        """(list_id, list_name, audience rows) for every target list the rows name (list columns present)."""
        rows = warehouse.query(
            f"SELECT any_value({self._col(self.list_id_column)}), any_value({self._col(self.list_name_column)}), "
            f"count(*) FROM {quote_table(self.table)} a GROUP BY {self._target_expr()} ORDER BY 1, 2"
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    def _ctes(self, keyed: bool, warehouse: Any) -> str:
        target_filter = f"{self._target_expr()} = $target" if keyed else "true"
        email = f"lower({self._col(self.email)})"
        pid, phone, xid = self._col(self.profile_id), self._col(self.phone_number), self._col(self.external_id)
        known = self.known_profiles_table
        if known and table_exists(warehouse, known):
            k = quote_table(known)
            lookups = (
                f"ke AS (SELECT lower(email) AS k, min(id) AS id FROM {k} WHERE email IS NOT NULL GROUP BY 1), "
                f"kp AS (SELECT phone_number AS k, min(id) AS id FROM {k} WHERE phone_number IS NOT NULL GROUP BY 1), "
                f"kx AS (SELECT CAST(external_id AS VARCHAR) AS k, min(id) AS id FROM {k} "
                "WHERE external_id IS NOT NULL GROUP BY 1), "
            )
        else:
            lookups = "".join(f"{n} AS (SELECT NULL::VARCHAR AS k, NULL::VARCHAR AS id WHERE false), "
                              for n in ("ke", "kp", "kx"))
        members = f"(SELECT * FROM {LIST_MEMBERS} WHERE run_id = $run AND list_id = $list)"
        return (
            f"WITH aud AS (SELECT DISTINCT {pid} AS profile_id, {email} AS email, {phone} AS phone_number, "
            f"{xid} AS external_id FROM {quote_table(self.table)} a WHERE {target_filter}), "
            + lookups +
            f"m AS {members}, "
            "me AS (SELECT lower(email) AS k, min(profile_id) AS id FROM m WHERE email IS NOT NULL GROUP BY 1), "
            "mp AS (SELECT phone_number AS k, min(profile_id) AS id FROM m WHERE phone_number IS NOT NULL GROUP BY 1), "
            "mx AS (SELECT external_id AS k, min(profile_id) AS id FROM m WHERE external_id IS NOT NULL GROUP BY 1), "
            f"stale AS (SELECT DISTINCT profile_id AS id FROM {LIST_STALE}), "  # ids never come back
            "resolved AS (SELECT aud.*, coalesce("
            + ", ".join(f"CASE WHEN {c} IN (SELECT id FROM stale) THEN NULL ELSE {c} END"
                        for c in ("aud.profile_id", "ke.id", "kp.id", "kx.id")) + ") AS resolved_id "
            "FROM aud LEFT JOIN ke ON ke.k = aud.email LEFT JOIN kp ON kp.k = aud.phone_number "
            "LEFT JOIN kx ON kx.k = aud.external_id), "
            "planned AS (SELECT r.*, coalesce(mi.profile_id, me.id, mp.id, mx.id) AS member_id FROM resolved r "
            "LEFT JOIN (SELECT DISTINCT profile_id FROM m) mi ON mi.profile_id = r.resolved_id "
            "LEFT JOIN me ON me.k = r.email LEFT JOIN mp ON mp.k = r.phone_number "
            "LEFT JOIN mx ON mx.k = r.external_id), "
            "kept AS (SELECT DISTINCT member_id AS id FROM planned WHERE member_id IS NOT NULL), "
            "adds AS (SELECT DISTINCT resolved_id AS id FROM planned WHERE member_id IS NULL AND resolved_id IS NOT NULL), "
            "imports AS (SELECT DISTINCT email, phone_number, external_id, profile_id FROM planned "
            "WHERE member_id IS NULL AND resolved_id IS NULL), "
            "removes AS (SELECT DISTINCT profile_id AS id FROM m WHERE profile_id NOT IN (SELECT id FROM kept)) "
        )

    @staticmethod
    def params(run_id: str, list_id: str | None, target_key: str | None) -> dict[str, Any]:
        """Query parameters of one list's plan: the run's members snapshot, the list, the target key."""
        params: dict[str, Any] = {"run": run_id, "list": list_id or ""}
        if target_key is not None:
            params["target"] = target_key
        return params

    def counts(self, warehouse: Any, params: dict[str, Any]) -> PlanCounts:
        row = warehouse.query(
            self._ctes("target" in params, warehouse)
            + "SELECT (SELECT count(*) FROM aud), (SELECT count(*) FROM kept), (SELECT count(*) FROM adds), "
            f"(SELECT count(*) FROM removes), (SELECT count(*) FROM imports WHERE {IDENTIFIED}), "
            f"(SELECT count(*) FROM imports WHERE NOT ({IDENTIFIED}))",
            params,
        )[0]
        return PlanCounts(*(int(v) for v in row))

    def verify(self, warehouse: Any, params: dict[str, Any]) -> VerifyCounts:
        row = warehouse.query(
            self._ctes("target" in params, warehouse)
            + "SELECT (SELECT count(*) FROM adds), (SELECT count(*) FROM removes), "
            f"(SELECT count(*) FROM imports WHERE {IDENTIFIED}), "
            "(SELECT count(*) FROM planned WHERE member_id IS NULL)", params)[0]
        return VerifyCounts(*(int(v) for v in row))

    def add_ids(self, warehouse: Any, params: dict[str, Any]) -> list[str]:
        """Profile ids the plan still adds (after a sync: ids that did not become members)."""
        return [r[0] for r in warehouse.query(self._ctes("target" in params, warehouse) + "SELECT id FROM adds",
                                              params)]

    def id_chunks(self, warehouse: Any, params: dict[str, Any], which: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Column ``id`` of the ``adds`` or ``removes`` (``which``), in id order, chunk by chunk."""
        if which not in ("adds", "removes"):
            raise ValueError(f"which must be 'adds' or 'removes', got {which!r}")
        return warehouse.read_chunks(self._ctes("target" in params, warehouse) + f"SELECT id FROM {which} ORDER BY id",
                                     params, chunk_rows=chunk_rows)

    def import_chunks(self, warehouse: Any, params: dict[str, Any]) -> Iterator[pd.DataFrame]:
        """Rows to import (email, phone_number, external_id and the stale profile_id), chunk by chunk."""
        return warehouse.read_chunks(self._ctes("target" in params, warehouse)
                                     + "SELECT email, phone_number, external_id, profile_id FROM imports", params)


MEMBER_COLUMNS = ["run_id", "list_id", "profile_id", "email", "phone_number", "external_id"]


def mark_stale(warehouse: Any, run_id: str, ids: Sequence[str]) -> None:
    """Record profile ids Klaviyo refused or ignored as members (their rows go by identifiers from now on)."""
    append_rows(warehouse, LIST_STALE, ["run_id", "profile_id"], [(run_id, i) for i in ids])


def clear_members(warehouse: Any, list_id: str) -> None:
    """Empty the members snapshot of ``list_id`` (before it is read again)."""
    warehouse.execute(f"DELETE FROM {LIST_MEMBERS} WHERE list_id = ?", [list_id])


def append_members(warehouse: Any, rows: Sequence[Sequence[Any]]) -> None:
    """Add members (``MEMBER_COLUMNS``: run_id, list_id, profile_id, email, phone_number, external_id) to the
    snapshot."""
    append_rows(warehouse, LIST_MEMBERS, MEMBER_COLUMNS, rows)


def registered_lists(warehouse: Any, account: str, list_name: str) -> list[str]:
    """Ids of the lists named ``list_name`` this package created in ``account``, oldest first."""
    return [r[0] for r in warehouse.query(
        f"SELECT list_id FROM {LIST_REGISTRY} WHERE list_name = ? AND coalesce(account, ?) = ? ORDER BY created_at",
        [list_name, DEFAULT_ACCOUNT, account])]


def register_list(warehouse: Any, account: str, list_name: str, list_id: str, created_at: Any, run_id: str) -> None:
    """Record a list this package just created in ``account``."""
    warehouse.execute(
        f"INSERT INTO {LIST_REGISTRY} (list_name, list_id, created_at, run_id, account) VALUES (?, ?, ?, ?, ?)",
        [list_name, list_id, created_at, run_id, account])
